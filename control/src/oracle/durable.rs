//! On-disk storage for an oracle replica: [`open`] returns an [`OracleStorage`] that writes
//! through to a directory every change raft relies on, so a killed replica restarts
//! ([`Replica::restart`], or [`open_replica`]) under the same id without voting twice in a
//! term or forgetting entries it acknowledged.
//!
//! # What is persisted, and when
//!
//! [`OracleStorage`] stays the in-memory log raft reads; each mutation the replica makes
//! (see [`super::replica`] on their order) is also written to disk before the call returns:
//!
//! * appended entries (which also truncate any conflicting suffix) — one record appended to
//!   the log file, then `sync_data`;
//! * the `HardState` (term, vote, commit), the boot counter and the voters — the hard-state
//!   file, replaced atomically;
//! * a compaction or a snapshot installed from the leader — the snapshot file (data and
//!   metadata, `ConfState` included), replaced atomically, then the log file rewritten
//!   (atomically) to hold only the entries after the snapshot.
//!
//! Since the replica stores entries and the hard state before it releases the messages that
//! promise them (votes, append acknowledgements), those promises survive a crash.
//!
//! An I/O error while persisting is fail-stop: the storage panics before the replica can
//! release anything that depends on the write, which the replica's panic guard turns into a
//! broken replica ([`Replica::is_broken`]); the driver should then exit and the replica be
//! restarted from its directory. Later writes on the same storage panic too.
//!
//! # Format (all integers little-endian)
//!
//! * `log` — append-only records: `len: u32`, `body: [u8; len]`, `xxh3_64(len ‖ body): u64`.
//!   A body is a kind byte and its payload: `1` = base `(index: u64, term: u64)`, the entry
//!   the log starts after (first record of a rewritten log; absent = `(0, 0)`); `2` = a batch
//!   of entries `count: u32` then per entry `len: u32` + the protobuf `Entry`. Replaying a
//!   batch truncates the log before its first index, exactly like the in-memory append.
//! * `hardstate` — `"VSYNCHS1"`, `term`, `vote`, `commit`, `boots` (u64 each), `n: u32`,
//!   `n` voter ids (u64), `xxh3_64` of everything before it.
//! * `snapshot` — `"VSYNCSN1"`, `len: u64`, the protobuf `Snapshot`, `xxh3_64` of everything
//!   before it.
//!
//! Within one process a directory can be open by one storage at a time
//! ([`DurableError::Locked`]); across processes this is not enforced (no file lock yet), so
//! never start two replicas on one directory.
//!
//! Atomic replacement writes `NAME.tmp`, syncs it, renames it over `NAME` and syncs the
//! directory.
//!
//! # Recovery
//!
//! [`open`] reads the three files. A torn final log record (cut short, or failing its
//! checksum with nothing after it) is what a crash mid-append leaves: it is dropped. A
//! checksum failure with data after it, a bad hard-state or snapshot file, or records that
//! contradict each other are [`DurableError::Corrupt`], never a panic. If the replica
//! crashed after writing a snapshot but before rewriting the log, the log's entries after the
//! snapshot are kept only if the log holds the snapshot's last entry with the same term. The
//! recovered log is then rewritten (which also removes a torn tail) and the boot counter is
//! advanced durably.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use xxhash_rust::xxh3::xxh3_64;

use super::replica::{Replica, ReplicaConfig, ReplicaError};
use super::storage::OracleStorage;

/// Name of the append-only log file in a storage directory.
pub const LOG_FILE: &str = "log";
/// Name of the hard-state file.
pub const HARD_STATE_FILE: &str = "hardstate";
/// Name of the snapshot file.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// Directories open in this process.
static OPEN_DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Marks a directory open while alive.
struct DirLock(PathBuf);

impl DirLock {
    fn take(dir: &Path) -> Result<DirLock, DurableError> {
        let canonical = fs::canonicalize(dir).map_err(io_err(dir, "resolve"))?;
        let mut open = OPEN_DIRS.lock().unwrap_or_else(|p| p.into_inner());
        if !open.insert(canonical.clone()) {
            return Err(DurableError::Locked(dir.to_path_buf()));
        }
        Ok(DirLock(canonical))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let mut open = OPEN_DIRS.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&self.0);
    }
}

const HS_MAGIC: &[u8; 8] = b"VSYNCHS1";
const SNAP_MAGIC: &[u8; 8] = b"VSYNCSN1";
const KIND_BASE: u8 = 1;
const KIND_ENTRIES: u8 = 2;
/// Largest log record accepted on replay (a sanity bound, far above any batch raft makes).
const MAX_RECORD: usize = 1 << 30;

/// Why durable storage could not be opened.
#[derive(Debug)]
pub enum DurableError {
    /// A file-system operation failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Another storage in this process has the directory open.
    Locked(PathBuf),
    /// A file's contents are damaged or inconsistent.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem (0 when not meaningful).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The replica refused the recovered storage (e.g. it belongs to other voters).
    Replica(ReplicaError),
}

impl std::fmt::Display for DurableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurableError::Io { path, op, source } => {
                write!(f, "oracle storage: {op} {}: {source}", path.display())
            }
            DurableError::Locked(p) => write!(
                f,
                "oracle storage: {} is in use by another replica",
                p.display()
            ),
            DurableError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "oracle storage: {} is corrupt at byte {offset}: {reason}",
                path.display()
            ),
            DurableError::Replica(e) => write!(f, "oracle storage: {e}"),
        }
    }
}

impl std::error::Error for DurableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DurableError::Io { source, .. } => Some(source),
            DurableError::Replica(e) => Some(e),
            _ => None,
        }
    }
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> DurableError {
    let path = path.to_path_buf();
    move |source| DurableError::Io { path, op, source }
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> DurableError {
    DurableError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Opens (creating if needed) the storage directory `dir` of a replica of the cluster
/// `voters`. A fresh directory starts empty; an existing one is recovered (see the module
/// docs). The voters are checked against the stored ones by [`Replica::restart`].
pub fn open(dir: &Path, voters: &[u64]) -> Result<OracleStorage, DurableError> {
    fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
    let lock = DirLock::take(dir)?;

    let hs_path = dir.join(HARD_STATE_FILE);
    let snap_path = dir.join(SNAPSHOT_FILE);
    let log_path = dir.join(LOG_FILE);
    let hs_bytes = read_optional(&hs_path)?;
    let snap_bytes = read_optional(&snap_path)?;
    let log_bytes = read_optional(&log_path)?;

    let (mut hard_state, boots, stored_voters) = match &hs_bytes {
        Some(b) => decode_hard_state(&hs_path, b)?,
        None => {
            if snap_bytes.is_some() || log_bytes.as_ref().is_some_and(|l| !l.is_empty()) {
                return Err(corrupt(
                    &hs_path,
                    0,
                    "missing while the log or snapshot exists",
                ));
            }
            (HardState::default(), 0, voters.to_vec())
        }
    };
    let snapshot = match &snap_bytes {
        Some(b) => decode_snapshot(&snap_path, b)?,
        None => Snapshot::default(),
    };
    let (snap_index, snap_term) = {
        let m = snapshot.get_metadata();
        (m.index, m.term)
    };
    let conf_state = if snap_index > 0 {
        snapshot.get_metadata().get_conf_state().clone()
    } else {
        ConfState {
            voters: stored_voters,
            ..Default::default()
        }
    };

    let (base, mut entries) = match &log_bytes {
        Some(b) => replay_log(&log_path, b)?,
        None => ((0, 0), Vec::new()),
    };
    if base.0 > snap_index {
        return Err(corrupt(
            &log_path,
            0,
            format!(
                "log starts after index {} but the snapshot covers only {snap_index}",
                base.0
            ),
        ));
    }
    if base.0 == snap_index && base.1 != snap_term {
        return Err(corrupt(
            &log_path,
            0,
            format!(
                "log base term {} differs from the snapshot's {snap_term}",
                base.1
            ),
        ));
    }
    if base.0 < snap_index {
        // Crashed between writing the snapshot and rewriting the log: keep what follows the
        // snapshot only if the log agrees with it at the snapshot's index.
        let at = (snap_index - base.0 - 1) as usize;
        if entries.get(at).is_some_and(|e| e.term == snap_term) {
            entries.drain(..=at);
        } else {
            entries.clear();
        }
    }
    hard_state.term = hard_state.term.max(snap_term);
    hard_state.commit = hard_state.commit.max(snap_index);
    let last = snap_index + entries.len() as u64;
    if hard_state.commit > last {
        return Err(corrupt(
            &hs_path,
            0,
            format!(
                "commit index {} beyond the log's last entry {last}",
                hard_state.commit
            ),
        ));
    }

    let mut log = DurableLog {
        dir: dir.to_path_buf(),
        log: None,
        persisted: None,
        failed: false,
        _lock: lock,
    };
    // Rewrite the recovered log (drops a torn tail), then reserve the next boot number so the
    // replica's `next_boot` needs no write.
    log.rewrite_log((snap_index, snap_term), &entries)
        .map_err(io_err(&log_path, "rewrite"))?;
    log.write_state(&hard_state, boots + 1, &conf_state.voters)
        .map_err(io_err(&hs_path, "write"))?;
    Ok(OracleStorage::restore(
        hard_state,
        conf_state,
        snapshot,
        entries,
        boots,
        Durable(Some(Box::new(log))),
    ))
}

/// Opens the storage in `dir` (see [`open`]) and starts replica `config` on it.
pub fn open_replica(config: ReplicaConfig, dir: &Path) -> Result<Replica, DurableError> {
    let storage = open(dir, &config.peers)?;
    Replica::restart(config, storage).map_err(DurableError::Replica)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, DurableError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "read")(e)),
    }
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

/// Splits `b` into its body and checks the trailing xxh3 checksum.
fn checked<'a>(path: &Path, b: &'a [u8], magic: &[u8; 8]) -> Result<&'a [u8], DurableError> {
    if b.len() < 16 || &b[..8] != magic {
        return Err(corrupt(path, 0, "bad header"));
    }
    let (body, sum) = b.split_at(b.len() - 8);
    if xxh3_64(body) != u64_at(sum, 0).expect("8 bytes") {
        return Err(corrupt(path, 0, "checksum mismatch"));
    }
    Ok(&body[8..])
}

fn encode_hard_state(hs: &HardState, boots: u64, voters: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 36 + 8 * voters.len() + 8);
    b.extend_from_slice(HS_MAGIC);
    for v in [hs.term, hs.vote, hs.commit, boots] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(voters.len() as u32).to_le_bytes());
    for v in voters {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let sum = xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    b
}

fn decode_hard_state(path: &Path, b: &[u8]) -> Result<(HardState, u64, Vec<u64>), DurableError> {
    let body = checked(path, b, HS_MAGIC)?;
    let bad = || corrupt(path, 0, "truncated hard state");
    let word = |i: usize| u64_at(body, i * 8).ok_or_else(bad);
    let hs = HardState {
        term: word(0)?,
        vote: word(1)?,
        commit: word(2)?,
        ..Default::default()
    };
    let boots = word(3)?;
    let n = u32_at(body, 32).ok_or_else(bad)? as usize;
    if body.len() != 36 + 8 * n {
        return Err(bad());
    }
    let voters = (0..n)
        .map(|i| u64_at(body, 36 + 8 * i).expect("length checked"))
        .collect();
    Ok((hs, boots, voters))
}

fn encode_snapshot(snap: &Snapshot) -> io::Result<Vec<u8>> {
    let data = snap
        .write_to_bytes()
        .map_err(|e| io::Error::other(format!("encode snapshot: {e}")))?;
    let mut b = Vec::with_capacity(data.len() + 24);
    b.extend_from_slice(SNAP_MAGIC);
    b.extend_from_slice(&(data.len() as u64).to_le_bytes());
    b.extend_from_slice(&data);
    let sum = xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    Ok(b)
}

fn decode_snapshot(path: &Path, b: &[u8]) -> Result<Snapshot, DurableError> {
    let body = checked(path, b, SNAP_MAGIC)?;
    let len = u64_at(body, 0).ok_or_else(|| corrupt(path, 0, "truncated snapshot"))?;
    if body.len() as u64 != 8 + len {
        return Err(corrupt(path, 0, "snapshot length mismatch"));
    }
    let snap = Snapshot::parse_from_bytes(&body[8..])
        .map_err(|e| corrupt(path, 16, format!("snapshot does not decode: {e}")))?;
    if snap.get_metadata().index == 0 {
        return Err(corrupt(path, 16, "snapshot has index 0"));
    }
    Ok(snap)
}

fn record(body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(body.len() + 12);
    r.extend_from_slice(&(body.len() as u32).to_le_bytes());
    r.extend_from_slice(body);
    let sum = xxh3_64(&r);
    r.extend_from_slice(&sum.to_le_bytes());
    r
}

fn base_record(index: u64, term: u64) -> Vec<u8> {
    let mut body = vec![KIND_BASE];
    body.extend_from_slice(&index.to_le_bytes());
    body.extend_from_slice(&term.to_le_bytes());
    record(&body)
}

fn entries_record(ents: &[Entry]) -> io::Result<Vec<u8>> {
    let mut body = vec![KIND_ENTRIES];
    body.extend_from_slice(&(ents.len() as u32).to_le_bytes());
    for e in ents {
        let b = e
            .write_to_bytes()
            .map_err(|e| io::Error::other(format!("encode entry: {e}")))?;
        body.extend_from_slice(&(b.len() as u32).to_le_bytes());
        body.extend_from_slice(&b);
    }
    if body.len() > MAX_RECORD {
        return Err(io::Error::other("entry batch too large for one log record"));
    }
    Ok(record(&body))
}

/// Replays the log: its base `(index, term)` and the entries after it.
#[allow(clippy::type_complexity)]
fn replay_log(path: &Path, b: &[u8]) -> Result<((u64, u64), Vec<Entry>), DurableError> {
    let mut base = (0, 0);
    let mut entries: Vec<Entry> = Vec::new();
    let mut pos = 0usize;
    let mut first = true;
    while pos < b.len() {
        let rest = b.len() - pos;
        let Some(len) = u32_at(b, pos).map(|l| l as usize) else {
            break; // torn length prefix
        };
        if len > MAX_RECORD || len + 12 > rest {
            break; // cut short: torn final record
        }
        let end = pos + 4 + len;
        let sum = u64_at(b, end).expect("length checked");
        if xxh3_64(&b[pos..end]) != sum {
            if end + 8 == b.len() {
                break; // the final record, partly written
            }
            return Err(corrupt(path, pos as u64, "log record checksum mismatch"));
        }
        let body = &b[pos + 4..end];
        let bad = |why: &str| corrupt(path, pos as u64, why.to_string());
        match body.first() {
            Some(&KIND_BASE) if first && body.len() == 17 => {
                base = (
                    u64_at(body, 1).expect("length checked"),
                    u64_at(body, 9).expect("length checked"),
                );
            }
            Some(&KIND_ENTRIES) => {
                let n = u32_at(body, 1).ok_or_else(|| bad("truncated entry batch"))? as usize;
                let mut at = 5;
                let mut batch = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    let l = u32_at(body, at).ok_or_else(|| bad("truncated entry batch"))? as usize;
                    let bytes = body
                        .get(at + 4..at + 4 + l)
                        .ok_or_else(|| bad("truncated entry batch"))?;
                    batch.push(
                        Entry::parse_from_bytes(bytes)
                            .map_err(|e| bad(&format!("entry does not decode: {e}")))?,
                    );
                    at += 4 + l;
                }
                if at != body.len() {
                    return Err(bad("trailing bytes in entry batch"));
                }
                if let Some(f) = batch.first() {
                    let last = base.0 + entries.len() as u64;
                    if f.index <= base.0 || f.index > last + 1 {
                        return Err(bad("entry batch not contiguous with the log"));
                    }
                    if batch.windows(2).any(|w| w[1].index != w[0].index + 1) {
                        return Err(bad("entry batch not contiguous"));
                    }
                    entries.truncate((f.index - 1 - base.0) as usize);
                    entries.extend(batch);
                }
            }
            _ => return Err(bad("unknown log record")),
        }
        first = false;
        pos = end + 8;
    }
    Ok((base, entries))
}

/// Replaces `dir/name` atomically with `bytes`.
fn replace_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The open files of a durable storage (owned by its [`OracleStorage`]).
pub(crate) struct DurableLog {
    dir: PathBuf,
    /// The log file, opened for appending.
    log: Option<File>,
    /// The hard state, boot count and voters last written.
    persisted: Option<(HardState, u64, Vec<u64>)>,
    /// A write failed: the files may lag the memory, so nothing more is written.
    failed: bool,
    _lock: DirLock,
}

impl DurableLog {
    fn guard(&mut self, f: impl FnOnce(&mut Self) -> io::Result<()>) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("an earlier write failed"));
        }
        let r = f(self);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Appends a batch of entries (truncating any conflicting suffix on replay) and syncs.
    pub(crate) fn append(&mut self, ents: &[Entry]) -> io::Result<()> {
        if ents.is_empty() {
            return Ok(());
        }
        self.guard(|d| {
            let rec = entries_record(ents)?;
            let f = d
                .log
                .as_mut()
                .ok_or_else(|| io::Error::other("log file not open"))?;
            f.write_all(&rec)?;
            f.sync_data()
        })
    }

    /// Writes the hard state, boot count and voters, if they changed.
    pub(crate) fn write_state(
        &mut self,
        hs: &HardState,
        boots: u64,
        voters: &[u64],
    ) -> io::Result<()> {
        if self
            .persisted
            .as_ref()
            .is_some_and(|(h, b, v)| h == hs && *b >= boots && v == voters)
        {
            return Ok(());
        }
        self.guard(|d| {
            replace_atomically(
                &d.dir,
                HARD_STATE_FILE,
                &encode_hard_state(hs, boots, voters),
            )?;
            d.persisted = Some((hs.clone(), boots, voters.to_vec()));
            Ok(())
        })
    }

    /// Stores `snap` and rewrites the log to hold only `entries` (those after it).
    pub(crate) fn write_snapshot(&mut self, snap: &Snapshot, entries: &[Entry]) -> io::Result<()> {
        self.guard(|d| {
            replace_atomically(&d.dir, SNAPSHOT_FILE, &encode_snapshot(snap)?)?;
            let m = snap.get_metadata();
            d.rewrite_log((m.index, m.term), entries)
        })
    }

    /// Replaces the log file with `base` and `entries`, and reopens it for appending.
    fn rewrite_log(&mut self, base: (u64, u64), entries: &[Entry]) -> io::Result<()> {
        let mut bytes = base_record(base.0, base.1);
        if !entries.is_empty() {
            bytes.extend_from_slice(&entries_record(entries)?);
        }
        self.log = None;
        replace_atomically(&self.dir, LOG_FILE, &bytes)?;
        self.log = Some(
            OpenOptions::new()
                .append(true)
                .open(self.dir.join(LOG_FILE))?,
        );
        Ok(())
    }
}

/// The optional on-disk half of an [`OracleStorage`]. A clone of a storage is an in-memory
/// copy only (two writers on one directory would corrupt it), so cloning yields `None`.
#[derive(Default)]
pub(crate) struct Durable(pub(crate) Option<Box<DurableLog>>);

impl Clone for Durable {
    fn clone(&self) -> Self {
        Durable(None)
    }
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(d) => write!(f, "Durable({})", d.dir.display()),
            None => write!(f, "InMemory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8].into(),
            ..Default::default()
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!(
            "vsync-durable-unit-{tag}-{}-{nanos}",
            std::process::id()
        ))
    }

    #[test]
    fn storage_survives_reopen_with_truncation_and_compaction() {
        let dir = tmp("reopen");
        {
            let mut s = open(&dir, &[1, 2, 3]).unwrap();
            assert!(matches!(
                open(&dir, &[1, 2, 3]),
                Err(DurableError::Locked(_))
            ));
            s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
            s.append(&[entry(2, 2), entry(3, 2), entry(4, 2)]).unwrap();
            s.set_hard_state(HardState {
                term: 2,
                vote: 3,
                commit: 3,
                ..Default::default()
            });
            s.compact(2, vec![42]).unwrap();
            s.append(&[entry(5, 2)]).unwrap();
        }
        let s = open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (3, 5));
        assert_eq!(s.term(2).unwrap(), 2);
        assert_eq!(s.term(4).unwrap(), 2);
        assert_eq!(s.snapshot_data(), Some(&[42u8][..]));
        assert_eq!((s.hard_state().term, s.hard_state().vote), (2, 3));
        assert_eq!(s.voters(), &[1, 2, 3]);
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn crash_between_snapshot_and_log_rewrite_keeps_a_consistent_log() {
        let dir = tmp("crash");
        {
            let mut s = open(&dir, &[1]).unwrap();
            s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
            s.set_commit(3);
        }
        let old_log = fs::read(dir.join(LOG_FILE)).unwrap();
        {
            let mut s = open(&dir, &[1]).unwrap();
            s.compact(2, vec![7]).unwrap();
        }
        // Put back the pre-compaction log: as if the rewrite never happened.
        fs::write(dir.join(LOG_FILE), &old_log).unwrap();
        let s = open(&dir, &[1]).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (3, 3));
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }
}
