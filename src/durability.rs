//! SafeSend durability: the manual's `IDurability`, with an in-memory logger (the default)
//! and the `DiskLogger`.
//!
//! SafeSend is Paxos: in a first phase the acceptors (the `Φ` lowest-ranked members, see
//! `SetSafeSendThreshold`) log each message — [`Durability::log`] — and only then is it
//! delivered. The runtime reports each delivery ([`Durability::delivered`]) and its end
//! ([`Durability::done`]): automatically when the handler returns, or, when the handler calls
//! `BeginAsyncUpdate` ([`Durability::begin_async`]), when the application later calls
//! `Done(ct)`. A logged message stays *pending* until it is done, and logged messages are
//! garbage-collected **strictly in delivery order**: if X, Y and Z are delivered in that
//! order, Z is collected only once X, Y and Z are all done. After a total failure the
//! rank-0 member of the restarting group replays [`Durability::pending`] — in the original
//! order, with the original [`CompletionTag`]s — and the application filters duplicates.
//!
//! * [`MemoryLogger`] keeps the log in memory (fast; lost if every acceptor fails).
//! * [`DiskLogger`] appends to `{base}{rank}.dat`, forcing each logged message to disk
//!   before [`log`](Durability::log) returns.
//!
//! The runtime calls [`delivered`](Durability::delivered) again for a replayed message; that
//! is accepted (a no-op) for a message already delivered, as is a second
//! [`log`](Durability::log) of a message already logged with the same payload.
//!
//! # Disk format
//!
//! ```text
//! header  "VSDL" 0x01 0 0 0                      8 bytes: magic, version, reserved
//! record  len: u32 LE                            bytes of kind + body
//!         kind: u8                               1 = logged, 2 = delivered, 3 = done
//!         body                                   tag (sender u64 LE, view u64 LE,
//!                                                msg_id u64 LE), then for `logged` the payload
//!         xxh3-64 of len, kind and body: u64 LE
//! ```
//!
//! `logged` records are followed by `File::sync_data` before `log` returns. `delivered` and
//! `done` records are appended without a sync: losing them in a crash only makes a message be
//! replayed again, which the manual's at-least-once replay allows. When the bytes of collected
//! messages exceed a threshold ([`DiskLogger::set_gc_threshold`]) the live records are
//! rewritten to `{file}.tmp`, which is synced and atomically renamed over the log, and the
//! directory is synced.
//!
//! On [`DiskLogger::open`] an existing log is replayed. A torn final record (a crash in the
//! middle of an append: the record runs past the end of the file, or the last record's
//! checksum fails) is truncated away and counted in the [`RecoveryReport`]; a bad record
//! followed by more data is [`DurabilityError::Corrupt`].
//!
//! ```
//! use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
//! use vsync::marshal::Address;
//!
//! let mut log = MemoryLogger::new();
//! let tag = |id| CompletionTag { sender: Address::new(1, 0), view: 3, msg_id: id };
//! for id in [1, 2, 3] {
//!     log.log(&LoggedMsg { tag: tag(id), payload: vec![id as u8] }).unwrap();
//!     log.delivered(tag(id)).unwrap();
//! }
//! log.begin_async(tag(1)).unwrap(); // X: a slow update, finished later
//! log.done(tag(2)).unwrap();
//! log.done(tag(3)).unwrap();
//! assert_eq!(log.pending().len(), 1); // Y and Z are done
//! assert_eq!(log.live(), 3);          // but not collected before X
//! log.done(tag(1)).unwrap();
//! assert_eq!(log.live(), 0);
//! ```

#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::marshal::Address;

/// Identifies a SafeSend message everywhere it is logged or replayed: the manual's
/// `CompletionTag`.
///
/// ```
/// use vsync::{durability::CompletionTag, marshal::Address};
/// let tag = CompletionTag { sender: Address::new(4, 1), view: 2, msg_id: 17 };
/// assert_eq!(tag.to_string(), format!("{}/v2/#17", Address::new(4, 1)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CompletionTag {
    /// The member that sent the message.
    pub sender: Address,
    /// The view in which it was first sent.
    pub view: u64,
    /// The sender's message number.
    pub msg_id: u64,
}

impl fmt::Display for CompletionTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/v{}/#{}", self.sender, self.view, self.msg_id)
    }
}

/// A message as logged: its tag and its marshalled content.
///
/// ```
/// use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
/// # use vsync::marshal::Address;
/// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
/// let msg = LoggedMsg { tag, payload: b"update".to_vec() };
/// let mut log = MemoryLogger::new();
/// assert_eq!(log.log(&msg).unwrap(), tag);
/// assert_eq!(log.pending(), [msg]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedMsg {
    /// The message's identity.
    pub tag: CompletionTag,
    /// The message, marshalled.
    pub payload: Vec<u8>,
}

/// The largest payload a [`DiskLogger`] record may carry.
///
/// ```
/// assert_eq!(vsync::durability::MAX_PAYLOAD, 1 << 30); // 1 GiB per logged message
/// ```
pub const MAX_PAYLOAD: usize = 1 << 30;

/// Why a durability operation failed.
///
/// ```
/// use vsync::durability::{CompletionTag, Durability, DurabilityError, MemoryLogger};
/// # use vsync::marshal::Address;
/// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
/// let mut log = MemoryLogger::new();
/// assert!(matches!(log.done(tag), Err(DurabilityError::UnknownTag(t)) if t == tag));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum DurabilityError {
    /// No live message has this tag (never logged, or already collected).
    UnknownTag(CompletionTag),
    /// A message with this tag but another payload is already logged.
    DuplicateTag(CompletionTag),
    /// `done` or `begin_async` for a message that was not delivered.
    NotDelivered(CompletionTag),
    /// The message is already done.
    AlreadyDone(CompletionTag),
    /// The payload is larger than [`MAX_PAYLOAD`].
    TooLarge {
        /// The payload's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A file operation failed (for example, the disk is full).
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The log file is damaged.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An earlier write or sync failed and could not be undone, so the file's state is
    /// unknown; reopen the logger to recover.
    Poisoned,
    /// The operation succeeded, but compacting the log afterwards failed (it will be retried).
    GcFailed(Box<DurabilityError>),
    /// In a [`log_batch`](Durability::log_batch), the write of this message's batch failed
    /// (the error is reported for the batch's first message to be written).
    BatchAborted(CompletionTag),
}

impl fmt::Display for DurabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DurabilityError::*;
        match self {
            UnknownTag(t) => write!(f, "no pending message has completion tag {t}"),
            DuplicateTag(t) => write!(
                f,
                "completion tag {t} is already logged with a different payload"
            ),
            NotDelivered(t) => write!(f, "message {t} has not been delivered yet"),
            AlreadyDone(t) => write!(f, "message {t} is already done"),
            TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the log's limit of {max}")
            }
            Io { op, path, source } => {
                write!(f, "cannot {op} durability log {}: {source}", path.display())
            }
            Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "durability log {} is corrupt at offset {offset}: {reason}",
                path.display()
            ),
            Poisoned => {
                f.write_str("durability log is in an unknown state after a failed write; reopen it")
            }
            GcFailed(e) => write!(
                f,
                "operation recorded, but compacting the durability log failed: {e}"
            ),
            BatchAborted(t) => write!(f, "message {t} was not logged: writing its batch failed"),
        }
    }
}

impl std::error::Error for DurabilityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DurabilityError::Io { source, .. } => Some(source),
            DurabilityError::GcFailed(e) => Some(&**e),
            _ => None,
        }
    }
}

/// The manual's `IDurability`: how SafeSend makes messages durable. See the
/// [module docs](self).
///
/// ```
/// use vsync::durability::{CompletionTag, Durability, DurabilityError, LoggedMsg, MemoryLogger};
///
/// /// A durability method that counts what it logs and delegates to a `MemoryLogger`.
/// #[derive(Default)]
/// struct Counting { inner: MemoryLogger, logged: u64 }
///
/// impl Durability for Counting {
///     fn log(&mut self, msg: &LoggedMsg) -> Result<CompletionTag, DurabilityError> {
///         self.logged += 1;
///         self.inner.log(msg)
///     }
///     fn delivered(&mut self, tag: CompletionTag) -> Result<(), DurabilityError> {
///         self.inner.delivered(tag)
///     }
///     fn begin_async(&mut self, tag: CompletionTag) -> Result<(), DurabilityError> {
///         self.inner.begin_async(tag)
///     }
///     fn is_async(&self, tag: CompletionTag) -> bool {
///         self.inner.is_async(tag)
///     }
///     fn done(&mut self, tag: CompletionTag) -> Result<(), DurabilityError> {
///         self.inner.done(tag)
///     }
///     fn pending(&self) -> Vec<LoggedMsg> {
///         self.inner.pending()
///     }
/// }
/// # let _ = Counting::default();
/// ```
pub trait Durability {
    /// Phase 1: records `msg` as a pending candidate for delivery, durably, before returning
    /// its tag. Logging the same tag and payload again is a no-op.
    ///
    /// ```
    /// # use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
    /// # use vsync::marshal::Address;
    /// let mut log = MemoryLogger::new();
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// let msg = LoggedMsg { tag, payload: vec![1] };
    /// assert_eq!(log.log(&msg).unwrap(), msg.tag);
    /// log.log(&msg).unwrap(); // the same message again: a no-op
    /// assert_eq!(log.pending().len(), 1);
    /// ```
    fn log(&mut self, msg: &LoggedMsg) -> Result<CompletionTag, DurabilityError>;

    /// Records that the message was delivered; deliveries fix the garbage-collection order.
    /// A second call for a message already delivered (a replay) is a no-op.
    ///
    /// ```
    /// # use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
    /// # use vsync::marshal::Address;
    /// let mut log = MemoryLogger::new();
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// let msg = LoggedMsg { tag, payload: vec![1] };
    /// log.log(&msg).unwrap();
    /// log.delivered(msg.tag).unwrap();
    /// log.delivered(msg.tag).unwrap(); // a replay: no-op
    /// ```
    fn delivered(&mut self, tag: CompletionTag) -> Result<(), DurabilityError>;

    /// `BeginAsyncUpdate(ct)`: the delivery upcall returned but the update continues; the
    /// runtime must not call [`done`](Self::done) on its behalf.
    ///
    /// ```
    /// # use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
    /// # use vsync::marshal::Address;
    /// let mut log = MemoryLogger::new();
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// let msg = LoggedMsg { tag, payload: vec![1] };
    /// log.log(&msg).unwrap();
    /// log.delivered(msg.tag).unwrap();
    /// log.begin_async(msg.tag).unwrap();
    /// assert!(log.is_async(msg.tag));
    /// ```
    fn begin_async(&mut self, tag: CompletionTag) -> Result<(), DurabilityError>;

    /// True if [`begin_async`](Self::begin_async) was called for this live message.
    ///
    /// ```
    /// # use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
    /// # use vsync::marshal::Address;
    /// let mut log = MemoryLogger::new();
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// let msg = LoggedMsg { tag, payload: vec![1] };
    /// log.log(&msg).unwrap();
    /// assert!(!log.is_async(msg.tag));
    /// ```
    fn is_async(&self, tag: CompletionTag) -> bool;

    /// `Done(ct)`: the update for the message is complete.
    ///
    /// ```
    /// # use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
    /// # use vsync::marshal::Address;
    /// let mut log = MemoryLogger::new();
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// let msg = LoggedMsg { tag, payload: vec![1] };
    /// log.log(&msg).unwrap();
    /// assert!(log.done(msg.tag).is_err()); // not delivered yet
    /// log.delivered(msg.tag).unwrap();
    /// log.done(msg.tag).unwrap();
    /// assert!(log.pending().is_empty());
    /// ```
    fn done(&mut self, tag: CompletionTag) -> Result<(), DurabilityError>;

    /// The messages logged but not yet done, in the order they were logged: what to replay
    /// after a total failure.
    ///
    /// ```
    /// # use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
    /// # use vsync::marshal::Address;
    /// let mut log = MemoryLogger::new();
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// let msg = LoggedMsg { tag, payload: vec![1] };
    /// log.log(&msg).unwrap();
    /// assert_eq!(log.pending(), [msg]); // what a total failure would replay
    /// ```
    fn pending(&self) -> Vec<LoggedMsg>;

    /// Logs several messages, in order; one result per message. The default calls
    /// [`log`](Self::log) for each; [`DiskLogger`] writes them all and forces the disk once
    /// (group commit), so every `Ok` is durable when this returns.
    ///
    /// ```
    /// # use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
    /// # use vsync::marshal::Address;
    /// let mut log = MemoryLogger::new();
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// let msg = LoggedMsg { tag, payload: vec![1] };
    /// let other = LoggedMsg { tag: CompletionTag { msg_id: 2, ..msg.tag }, payload: vec![2] };
    /// let results = log.log_batch(&[msg, other]);
    /// assert!(results.iter().all(|r| r.is_ok()));
    /// ```
    fn log_batch(&mut self, msgs: &[LoggedMsg]) -> Vec<Result<CompletionTag, DurabilityError>> {
        msgs.iter().map(|m| self.log(m)).collect()
    }
}

#[derive(Clone, Debug)]
struct Entry {
    seq: u64,
    payload: Vec<u8>,
    delivered: bool,
    done: bool,
    is_async: bool,
    /// Bytes of this message's records in the current log file.
    disk_bytes: u64,
}

/// The state shared by both loggers: live messages, log order, delivery order.
#[derive(Clone, Debug, Default)]
struct Ledger {
    entries: HashMap<CompletionTag, Entry>,
    by_seq: BTreeMap<u64, CompletionTag>,
    /// Delivered, not yet collected, in delivery order.
    delivery: VecDeque<CompletionTag>,
    next_seq: u64,
}

/// What a validated operation will do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Nothing to record (idempotent repeat).
    Noop,
    /// Record it.
    Apply,
}

impl Ledger {
    fn check_log(&self, msg: &LoggedMsg) -> Result<Step, DurabilityError> {
        match self.entries.get(&msg.tag) {
            Some(e) if e.payload == msg.payload => Ok(Step::Noop),
            Some(_) => Err(DurabilityError::DuplicateTag(msg.tag)),
            None => Ok(Step::Apply),
        }
    }

    fn apply_log(&mut self, msg: &LoggedMsg, bytes: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_seq.insert(seq, msg.tag);
        self.entries.insert(
            msg.tag,
            Entry {
                seq,
                payload: msg.payload.clone(),
                delivered: false,
                done: false,
                is_async: false,
                disk_bytes: bytes,
            },
        );
    }

    fn check_delivered(&self, tag: CompletionTag) -> Result<Step, DurabilityError> {
        match self.entries.get(&tag) {
            None => Err(DurabilityError::UnknownTag(tag)),
            Some(e) if e.delivered => Ok(Step::Noop),
            Some(_) => Ok(Step::Apply),
        }
    }

    fn apply_delivered(&mut self, tag: CompletionTag, bytes: u64) {
        if let Some(e) = self.entries.get_mut(&tag) {
            debug_assert!(!e.delivered);
            e.delivered = true;
            e.disk_bytes += bytes;
            self.delivery.push_back(tag);
        }
    }

    fn check_done(&self, tag: CompletionTag) -> Result<(), DurabilityError> {
        match self.entries.get(&tag) {
            None => Err(DurabilityError::UnknownTag(tag)),
            Some(e) if !e.delivered => Err(DurabilityError::NotDelivered(tag)),
            Some(e) if e.done => Err(DurabilityError::AlreadyDone(tag)),
            Some(_) => Ok(()),
        }
    }

    fn apply_done(&mut self, tag: CompletionTag, bytes: u64) {
        if let Some(e) = self.entries.get_mut(&tag) {
            e.done = true;
            e.disk_bytes += bytes;
        }
    }

    fn begin_async(&mut self, tag: CompletionTag) -> Result<(), DurabilityError> {
        self.check_done(tag)?;
        if let Some(e) = self.entries.get_mut(&tag) {
            e.is_async = true;
        }
        Ok(())
    }

    fn is_async(&self, tag: CompletionTag) -> bool {
        self.entries.get(&tag).is_some_and(|e| e.is_async)
    }

    /// Collects the done prefix of the delivery order; returns the bytes freed on disk.
    fn collect(&mut self) -> u64 {
        let mut freed = 0;
        while let Some(tag) = self.delivery.front().copied() {
            match self.entries.get(&tag) {
                Some(e) if e.done => {
                    self.delivery.pop_front();
                    if let Some(e) = self.entries.remove(&tag) {
                        self.by_seq.remove(&e.seq);
                        freed += e.disk_bytes;
                    }
                }
                _ => break,
            }
        }
        debug_assert_eq!(self.entries.len(), self.by_seq.len());
        freed
    }

    fn pending(&self) -> Vec<LoggedMsg> {
        self.by_seq
            .values()
            .filter_map(|t| {
                let e = &self.entries[t];
                (!e.done).then(|| LoggedMsg {
                    tag: *t,
                    payload: e.payload.clone(),
                })
            })
            .collect()
    }
}

/// The default durability method: an in-memory log. See the [module docs](self).
///
/// ```
/// use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
/// # use vsync::marshal::Address;
/// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
/// let mut log = MemoryLogger::new();
/// log.log(&LoggedMsg { tag, payload: vec![1] }).unwrap();
/// log.delivered(tag).unwrap();
/// log.done(tag).unwrap();
/// assert!(log.pending().is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryLogger {
    ledger: Ledger,
}

impl MemoryLogger {
    /// An empty in-memory log.
    ///
    /// ```
    /// use vsync::durability::{Durability, MemoryLogger};
    /// let log = MemoryLogger::new();
    /// assert!(log.pending().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages logged and not yet collected (pending or done but waiting for an earlier
    /// delivery to be done).
    ///
    /// ```
    /// use vsync::durability::{CompletionTag, Durability, LoggedMsg, MemoryLogger};
    /// # use vsync::marshal::Address;
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// let mut log = MemoryLogger::new();
    /// log.log(&LoggedMsg { tag, payload: vec![1] }).unwrap();
    /// assert_eq!(log.live(), 1);
    /// ```
    pub fn live(&self) -> usize {
        self.ledger.entries.len()
    }
}

impl Durability for MemoryLogger {
    fn log(&mut self, msg: &LoggedMsg) -> Result<CompletionTag, DurabilityError> {
        if self.ledger.check_log(msg)? == Step::Apply {
            self.ledger.apply_log(msg, 0);
        }
        Ok(msg.tag)
    }

    fn delivered(&mut self, tag: CompletionTag) -> Result<(), DurabilityError> {
        if self.ledger.check_delivered(tag)? == Step::Apply {
            self.ledger.apply_delivered(tag, 0);
        }
        Ok(())
    }

    fn begin_async(&mut self, tag: CompletionTag) -> Result<(), DurabilityError> {
        self.ledger.begin_async(tag)
    }

    fn is_async(&self, tag: CompletionTag) -> bool {
        self.ledger.is_async(tag)
    }

    fn done(&mut self, tag: CompletionTag) -> Result<(), DurabilityError> {
        self.ledger.check_done(tag)?;
        self.ledger.apply_done(tag, 0);
        self.ledger.collect();
        Ok(())
    }

    fn pending(&self) -> Vec<LoggedMsg> {
        self.ledger.pending()
    }
}

const MAGIC: [u8; 8] = *b"VSDL\x01\0\0\0";
const KIND_LOG: u8 = 1;
const KIND_DELIVERED: u8 = 2;
const KIND_DONE: u8 = 3;
const TAG_LEN: usize = 24;
/// len + checksum.
const FRAME: usize = 4 + 8;

/// The default compaction threshold: bytes of collected records.
///
/// ```
/// # use vsync::durability::*;
/// # use vsync::marshal::Address;
/// # let dir = std::env::temp_dir().join(format!("vsdl-gcdefault-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let mut log = DiskLogger::open(dir.join("g"), 0).unwrap();
/// log.set_gc_threshold(4 * DEFAULT_GC_THRESHOLD); // compact less often
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub const DEFAULT_GC_THRESHOLD: u64 = 1 << 20;

/// What [`DiskLogger::open`] found in an existing log.
///
/// ```
/// # use vsync::durability::*;
/// # use vsync::marshal::Address;
/// # let dir = std::env::temp_dir().join(format!("vsdl-report-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let log = DiskLogger::open(dir.join("g"), 0).unwrap(); // a new, empty log
/// assert_eq!(log.recovery(), &RecoveryReport::default());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records replayed.
    pub records: usize,
    /// Torn final records truncated away (0 or 1).
    pub torn_records: usize,
    /// Bytes truncated away.
    pub torn_bytes: u64,
}

/// A SafeSend durability log on disk, `{base}{rank}.dat`. See the [module docs](self).
///
/// ```
/// use vsync::durability::{CompletionTag, DiskLogger, Durability, LoggedMsg};
/// use vsync::marshal::Address;
///
/// let dir = std::env::temp_dir().join(format!("vsync-doc-disklogger-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let base = dir.join("mygroup");
/// let tag = CompletionTag { sender: Address::new(4, 1), view: 2, msg_id: 17 };
/// {
///     let mut log = DiskLogger::open(&base, 0).unwrap();
///     assert_eq!(log.path(), dir.join("mygroup0.dat"));
///     log.log(&LoggedMsg { tag, payload: b"update".to_vec() }).unwrap();
///     log.delivered(tag).unwrap();
///     // crash before Done
/// }
/// let log = DiskLogger::open(&base, 0).unwrap();
/// assert_eq!(log.pending(), [LoggedMsg { tag, payload: b"update".to_vec() }]);
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct DiskLogger {
    path: PathBuf,
    file: File,
    /// Length of the file as far as we have written it successfully.
    len: u64,
    /// Bytes of records of collected messages.
    dead: u64,
    gc_threshold: u64,
    ledger: Ledger,
    report: RecoveryReport,
    poisoned: bool,
    /// Data syncs of appended records (`log`, `log_batch`).
    syncs: u64,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DurabilityError + 'a {
    move |source| DurabilityError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn put_tag(buf: &mut Vec<u8>, t: &CompletionTag) {
    buf.extend_from_slice(&t.sender.0.to_le_bytes());
    buf.extend_from_slice(&t.view.to_le_bytes());
    buf.extend_from_slice(&t.msg_id.to_le_bytes());
}

fn get_tag(b: &[u8]) -> Option<CompletionTag> {
    let u =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    Some(CompletionTag {
        sender: Address(u(0)?),
        view: u(8)?,
        msg_id: u(16)?,
    })
}

/// Appends one framed record to `buf`; returns its size.
fn frame(buf: &mut Vec<u8>, kind: u8, tag: &CompletionTag, payload: &[u8]) -> u64 {
    let start = buf.len();
    let len = (1 + TAG_LEN + payload.len()) as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.push(kind);
    put_tag(buf, tag);
    buf.extend_from_slice(payload);
    let sum = xxh3_64(&buf[start..]);
    buf.extend_from_slice(&sum.to_le_bytes());
    (buf.len() - start) as u64
}

/// The directory holding `path`, for syncing after a rename.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DiskLogger {
    /// Opens (creating if needed) the log of acceptor `acceptor_rank`: the file
    /// `{path_base}{acceptor_rank}.dat`. An existing log is replayed: its pending messages are
    /// available from [`pending`](Durability::pending) in their original order with their
    /// original tags, and a torn final record is truncated (see [`recovery`](Self::recovery)).
    ///
    /// ```
    /// # use vsync::durability::*;
    /// # use vsync::marshal::Address;
    /// # let dir = std::env::temp_dir().join(format!("vsdl-open-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let log = DiskLogger::open(dir.join("accounts"), 2).unwrap();
    /// assert_eq!(log.path(), dir.join("accounts2.dat"));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn open(
        path_base: impl AsRef<Path>,
        acceptor_rank: usize,
    ) -> Result<Self, DurabilityError> {
        let mut name = OsString::from(path_base.as_ref().as_os_str());
        name.push(format!("{acceptor_rank}.dat"));
        Self::open_path(PathBuf::from(name))
    }

    /// Opens (creating if needed) the log at exactly `path`.
    ///
    /// ```
    /// # use vsync::durability::*;
    /// # use vsync::marshal::Address;
    /// # let dir = std::env::temp_dir().join(format!("vsdl-openpath-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let log = DiskLogger::open_path(dir.join("safe.log")).unwrap();
    /// assert_eq!(log.path(), dir.join("safe.log"));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn open_path(path: impl Into<PathBuf>) -> Result<Self, DurabilityError> {
        let path = path.into();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        let mut me = DiskLogger {
            path,
            file,
            len: 0,
            dead: 0,
            gc_threshold: DEFAULT_GC_THRESHOLD,
            ledger: Ledger::default(),
            report: RecoveryReport::default(),
            poisoned: false,
            syncs: 0,
        };
        let good = me.replay(&bytes)?;
        me.len = good;
        if good < bytes.len() as u64 || bytes.len() < MAGIC.len() {
            // A torn tail (or a torn or missing header): cut it off and make sure the header
            // is on disk before anything is appended.
            me.report.torn_bytes = bytes.len() as u64 - good;
            me.file
                .set_len(good)
                .map_err(io_err("truncate", &me.path))?;
            if good == 0 {
                me.file
                    .write_all(&MAGIC)
                    .map_err(io_err("write", &me.path))?;
                me.len = MAGIC.len() as u64;
            }
            me.file.sync_all().map_err(io_err("sync", &me.path))?;
            if bytes.is_empty() {
                sync_dir(&parent_dir(&me.path)).map_err(io_err("sync directory of", &me.path))?;
            }
        }
        me.dead += me.ledger.collect();
        Ok(me)
    }

    /// Replays `bytes` into the ledger; returns the length of the good prefix.
    fn replay(&mut self, bytes: &[u8]) -> Result<u64, DurabilityError> {
        let path = self.path.clone();
        let corrupt = |offset: usize, reason| DurabilityError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        if bytes.len() < MAGIC.len() {
            if MAGIC.starts_with(bytes) {
                if !bytes.is_empty() {
                    self.report.torn_records = 1;
                }
                return Ok(0);
            }
            return Err(corrupt(0, "not a vsync durability log (bad magic)"));
        }
        if bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt(
                0,
                "not a vsync durability log (bad magic or version)",
            ));
        }
        let mut pos = MAGIC.len();
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            let torn = |me: &mut Self| {
                me.report.torn_records = 1;
                Ok(pos as u64)
            };
            if rest.len() < 4 {
                return torn(self);
            }
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let total = FRAME + len;
            if rest.len() < total {
                return torn(self);
            }
            let body = &rest[4..4 + len];
            let sum = u64::from_le_bytes(rest[4 + len..total].try_into().unwrap_or([0; 8]));
            if xxh3_64(&rest[..4 + len]) != sum {
                if rest.len() == total {
                    return torn(self);
                }
                return Err(corrupt(pos, "checksum mismatch"));
            }
            self.apply_record(body, total as u64)
                .map_err(|reason| corrupt(pos, reason))?;
            self.report.records += 1;
            pos += total;
        }
        Ok(pos as u64)
    }

    fn apply_record(&mut self, body: &[u8], size: u64) -> Result<(), &'static str> {
        let (&kind, rest) = body.split_first().ok_or("empty record")?;
        let tag = get_tag(rest).ok_or("record too short for a completion tag")?;
        let l = &mut self.ledger;
        match kind {
            KIND_LOG => {
                let msg = LoggedMsg {
                    tag,
                    payload: rest[TAG_LEN..].to_vec(),
                };
                match l.check_log(&msg) {
                    Ok(Step::Apply) => l.apply_log(&msg, size),
                    Ok(Step::Noop) => self.dead += size,
                    Err(_) => {
                        return Err("a completion tag is logged twice with different payloads")
                    }
                }
            }
            KIND_DELIVERED | KIND_DONE if rest.len() != TAG_LEN => {
                return Err("delivered/done record of the wrong length")
            }
            KIND_DELIVERED => match l.check_delivered(tag) {
                Ok(Step::Apply) => l.apply_delivered(tag, size),
                Ok(Step::Noop) => self.dead += size,
                Err(_) => return Err("delivery of a message that was never logged"),
            },
            KIND_DONE => {
                // `delivered` records are not synced: a `done` implies the delivery.
                if matches!(l.check_delivered(tag), Ok(Step::Apply)) {
                    l.apply_delivered(tag, 0);
                }
                match l.check_done(tag) {
                    Ok(()) => l.apply_done(tag, size),
                    Err(DurabilityError::AlreadyDone(_)) => self.dead += size,
                    Err(_) => return Err("completion of a message that was never logged"),
                }
                // Collect as the live process did, so later records see the same state.
                self.dead += l.collect();
            }
            _ => return Err("unknown record kind"),
        }
        Ok(())
    }

    /// The log file.
    ///
    /// ```
    /// # use vsync::durability::*;
    /// # use vsync::marshal::Address;
    /// # let dir = std::env::temp_dir().join(format!("vsdl-path-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let log = DiskLogger::open(dir.join("g"), 0).unwrap();
    /// assert_eq!(log.path().file_name().unwrap(), "g0.dat");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening an existing log found.
    ///
    /// ```
    /// # use vsync::durability::*;
    /// # use vsync::marshal::Address;
    /// # let dir = std::env::temp_dir().join(format!("vsdl-recovery-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// let mut first = DiskLogger::open(dir.join("g"), 0).unwrap();
    /// first.log(&LoggedMsg { tag, payload: vec![1] }).unwrap();
    /// drop(first);
    /// let log = DiskLogger::open(dir.join("g"), 0).unwrap(); // replays the existing log
    /// assert_eq!(log.recovery().torn_records, 0);
    /// assert_eq!(log.pending().len(), 1);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// The size of the log file.
    ///
    /// ```
    /// # use vsync::durability::*;
    /// # use vsync::marshal::Address;
    /// # let dir = std::env::temp_dir().join(format!("vsdl-filelen-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let log = DiskLogger::open(dir.join("g"), 0).unwrap();
    /// assert_eq!(log.file_len(), std::fs::metadata(log.path()).unwrap().len());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// How many times appended records were forced to disk (`sync_data`) since opening: one
    /// per [`log`](Durability::log) of a new message, one per
    /// [`log_batch`](Durability::log_batch) that wrote something.
    ///
    /// ```
    /// # use vsync::durability::*;
    /// # use vsync::marshal::Address;
    /// # let dir = std::env::temp_dir().join(format!("vsdl-syncs-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let mut log = DiskLogger::open(dir.join("g"), 0).unwrap();
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// log.log(&LoggedMsg { tag, payload: vec![1] }).unwrap();
    /// log.log(&LoggedMsg { tag, payload: vec![1] }).unwrap(); // already logged: no-op
    /// assert_eq!(log.syncs(), 1);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Bytes of records of collected messages still in the file.
    ///
    /// ```
    /// # use vsync::durability::*;
    /// # use vsync::marshal::Address;
    /// # let dir = std::env::temp_dir().join(format!("vsdl-dead-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let mut log = DiskLogger::open(dir.join("g"), 0).unwrap();
    /// log.set_gc_threshold(u64::MAX); // never compact
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// log.log(&LoggedMsg { tag, payload: vec![1] }).unwrap();
    /// log.delivered(tag).unwrap();
    /// log.done(tag).unwrap();
    /// assert!(log.dead_bytes() > 0);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn dead_bytes(&self) -> u64 {
        self.dead
    }

    /// Messages logged and not yet collected.
    ///
    /// ```
    /// # use vsync::durability::*;
    /// # use vsync::marshal::Address;
    /// # let dir = std::env::temp_dir().join(format!("vsdl-live-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let mut log = DiskLogger::open(dir.join("g"), 0).unwrap();
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// log.log(&LoggedMsg { tag, payload: vec![1] }).unwrap();
    /// assert_eq!(log.live(), 1);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn live(&self) -> usize {
        self.ledger.entries.len()
    }

    /// Sets how many bytes of collected records trigger a compaction (default
    /// [`DEFAULT_GC_THRESHOLD`]); 0 compacts after every collection.
    ///
    /// ```
    /// # use vsync::durability::*;
    /// # use vsync::marshal::Address;
    /// # let dir = std::env::temp_dir().join(format!("vsdl-gc0-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let mut log = DiskLogger::open(dir.join("g"), 0).unwrap();
    /// log.set_gc_threshold(0); // compact after every collection
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// log.log(&LoggedMsg { tag, payload: vec![1] }).unwrap();
    /// log.delivered(tag).unwrap();
    /// log.done(tag).unwrap();
    /// assert_eq!(log.dead_bytes(), 0);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn set_gc_threshold(&mut self, bytes: u64) {
        self.gc_threshold = bytes;
    }

    /// Appends `buf`, optionally syncing; on failure undoes the partial append.
    fn append(&mut self, buf: &[u8], sync: bool) -> Result<(), DurabilityError> {
        if self.poisoned {
            return Err(DurabilityError::Poisoned);
        }
        let res = self
            .file
            .write_all(buf)
            .map_err(io_err("append to", &self.path))
            .and_then(|()| {
                if sync {
                    self.syncs += 1;
                    self.file.sync_data().map_err(io_err("sync", &self.path))
                } else {
                    Ok(())
                }
            });
        match res {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut the partial record off; if that fails too the file is unknown.
                if self.file.set_len(self.len).is_err() || (sync && self.file.sync_all().is_err()) {
                    self.poisoned = true;
                }
                Err(e)
            }
        }
    }

    /// Rewrites the log with only the live records (temp file, sync, atomic rename, directory
    /// sync). Called automatically past the threshold.
    ///
    /// ```
    /// # use vsync::durability::*;
    /// # use vsync::marshal::Address;
    /// # let dir = std::env::temp_dir().join(format!("vsdl-compact-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let mut log = DiskLogger::open(dir.join("g"), 0).unwrap();
    /// log.set_gc_threshold(u64::MAX);
    /// let tag = CompletionTag { sender: Address::new(1, 0), view: 1, msg_id: 1 };
    /// log.log(&LoggedMsg { tag, payload: vec![1] }).unwrap();
    /// log.delivered(tag).unwrap();
    /// log.done(tag).unwrap();
    /// let before = log.file_len();
    /// log.compact().unwrap();
    /// assert!(log.file_len() < before && log.dead_bytes() == 0);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn compact(&mut self) -> Result<(), DurabilityError> {
        if self.poisoned {
            return Err(DurabilityError::Poisoned);
        }
        let mut tmp_name = OsString::from(self.path.as_os_str());
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let l = &self.ledger;
        let mut buf = Vec::from(MAGIC);
        let mut sizes: HashMap<CompletionTag, u64> = HashMap::new();
        for t in l.by_seq.values() {
            let n = frame(&mut buf, KIND_LOG, t, &l.entries[t].payload);
            *sizes.entry(*t).or_default() += n;
        }
        for t in &l.delivery {
            let n = frame(&mut buf, KIND_DELIVERED, t, &[]);
            *sizes.entry(*t).or_default() += n;
        }
        for t in &l.delivery {
            if l.entries[t].done {
                let n = frame(&mut buf, KIND_DONE, t, &[]);
                *sizes.entry(*t).or_default() += n;
            }
        }
        let write = || -> io::Result<File> {
            let mut f = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .truncate(false)
                .open(&tmp)?;
            f.set_len(0)?;
            f.write_all(&buf)?;
            f.sync_all()?;
            Ok(f)
        };
        let file = match write() {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_err("write compacted copy of", &self.path)(e));
            }
        };
        if let Err(e) = std::fs::rename(&tmp, &self.path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("replace", &self.path)(e));
        }
        // From here on the new file is the log.
        self.file = file;
        self.len = buf.len() as u64;
        self.dead = 0;
        for (t, n) in sizes {
            if let Some(e) = self.ledger.entries.get_mut(&t) {
                e.disk_bytes = n;
            }
        }
        sync_dir(&parent_dir(&self.path)).map_err(io_err("sync directory of", &self.path))
    }
}

impl Durability for DiskLogger {
    fn log(&mut self, msg: &LoggedMsg) -> Result<CompletionTag, DurabilityError> {
        if msg.payload.len() > MAX_PAYLOAD {
            return Err(DurabilityError::TooLarge {
                len: msg.payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        if self.ledger.check_log(msg)? == Step::Apply {
            let mut buf = Vec::with_capacity(FRAME + 1 + TAG_LEN + msg.payload.len());
            let n = frame(&mut buf, KIND_LOG, &msg.tag, &msg.payload);
            self.append(&buf, true)?;
            self.ledger.apply_log(msg, n);
        }
        Ok(msg.tag)
    }

    fn log_batch(&mut self, msgs: &[LoggedMsg]) -> Vec<Result<CompletionTag, DurabilityError>> {
        let mut out: Vec<Result<CompletionTag, DurabilityError>> = Vec::with_capacity(msgs.len());
        // Messages to write: index into `msgs` and record size.
        let mut write: Vec<(usize, u64)> = Vec::new();
        let mut planned: HashMap<CompletionTag, usize> = HashMap::new();
        let mut buf = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if m.payload.len() > MAX_PAYLOAD {
                out.push(Err(DurabilityError::TooLarge {
                    len: m.payload.len(),
                    max: MAX_PAYLOAD,
                }));
                continue;
            }
            if let Some(&j) = planned.get(&m.tag) {
                out.push(if msgs[j].payload == m.payload {
                    Ok(m.tag)
                } else {
                    Err(DurabilityError::DuplicateTag(m.tag))
                });
                continue;
            }
            match self.ledger.check_log(m) {
                Ok(Step::Noop) => out.push(Ok(m.tag)),
                Ok(Step::Apply) => {
                    let n = frame(&mut buf, KIND_LOG, &m.tag, &m.payload);
                    planned.insert(m.tag, i);
                    write.push((i, n));
                    out.push(Ok(m.tag));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if write.is_empty() {
            return out;
        }
        match self.append(&buf, true) {
            Ok(()) => {
                for (i, n) in write {
                    self.ledger.apply_log(&msgs[i], n);
                }
            }
            Err(e) => {
                let mut first = Some(e);
                for (i, _) in write {
                    out[i] = Err(first
                        .take()
                        .unwrap_or(DurabilityError::BatchAborted(msgs[i].tag)));
                }
            }
        }
        out
    }

    fn delivered(&mut self, tag: CompletionTag) -> Result<(), DurabilityError> {
        if self.ledger.check_delivered(tag)? == Step::Apply {
            let mut buf = Vec::with_capacity(FRAME + 1 + TAG_LEN);
            let n = frame(&mut buf, KIND_DELIVERED, &tag, &[]);
            self.append(&buf, false)?;
            self.ledger.apply_delivered(tag, n);
        }
        Ok(())
    }

    fn begin_async(&mut self, tag: CompletionTag) -> Result<(), DurabilityError> {
        self.ledger.begin_async(tag)
    }

    fn is_async(&self, tag: CompletionTag) -> bool {
        self.ledger.is_async(tag)
    }

    fn done(&mut self, tag: CompletionTag) -> Result<(), DurabilityError> {
        self.ledger.check_done(tag)?;
        let mut buf = Vec::with_capacity(FRAME + 1 + TAG_LEN);
        let n = frame(&mut buf, KIND_DONE, &tag, &[]);
        self.append(&buf, false)?;
        self.ledger.apply_done(tag, n);
        self.dead += self.ledger.collect();
        if self.dead > 0 && self.dead >= self.gc_threshold {
            self.compact()
                .map_err(|e| DurabilityError::GcFailed(Box::new(e)))?;
        }
        Ok(())
    }

    fn pending(&self) -> Vec<LoggedMsg> {
        self.ledger.pending()
    }
}
