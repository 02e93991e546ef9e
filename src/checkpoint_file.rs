//! The checkpoint file of a persistent group (the manual's `Persistent(path)`,
//! `MakeCheckpoint`, `SetCheckpointInterval`).
//!
//! The group leader writes the group's state — a checkpoint, as a list of chunks, the same
//! chunks a state transfer sends — to one file; after a total failure the restarting group
//! loads it. [`CheckpointFile::write`] never leaves a half-written checkpoint in place: the new
//! checkpoint goes to `{path}.tmp`, which is synced; the current file is kept as
//! `{path}.bak` (the manual's "name.bak", for reverting); the temporary file is renamed over
//! `path` atomically; and the directory is synced. [`CheckpointFile::load`] checks everything
//! and reports a damaged file as [`CheckpointError::Corrupt`], naming the file and leaving
//! the backup alone ([`CheckpointFile::load_backup`] reads it).
//!
//! # Format
//!
//! ```text
//! magic    "VSCK"            4 bytes
//! version  1                 1 byte, then 3 zero bytes
//! count    u32 LE            number of chunks
//! chunks   len: u64 LE, then len bytes, for each chunk
//! check    xxh3-64 LE        of everything before it
//! ```
//!
//! A secure group's checkpoint ([`CheckpointFile::with_key`]) is the same bytes sealed with
//! AES-256-GCM: `"VSCE" 1 0 0 0`, a 12-byte random nonce, the ciphertext, a 16-byte tag (the
//! 8-byte header is authenticated too).
//!
//! Decoding is bounded: counts and lengths are checked against the bytes actually present
//! before anything is allocated, and files above [`CheckpointFile::max_size`] are refused.
//!
//! ```
//! use vsync::checkpoint_file::CheckpointFile;
//!
//! let dir = std::env::temp_dir().join(format!("vsync-doc-ckpt-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let ckpt = CheckpointFile::new(dir.join("group.ckpt"));
//! assert_eq!(ckpt.load().unwrap(), None);
//! ckpt.write(&[b"accounts", b"balances"]).unwrap();
//! ckpt.write(&[b"accounts v2"]).unwrap();
//! assert_eq!(ckpt.load().unwrap(), Some(vec![b"accounts v2".to_vec()]));
//! assert_eq!(ckpt.load_backup().unwrap().unwrap().len(), 2); // the previous checkpoint
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

#![deny(missing_docs)]

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

const MAGIC: [u8; 4] = *b"VSCK";
/// The format version written.
///
/// ```
/// use vsync::checkpoint_file::{encode, VERSION};
/// assert_eq!(encode(&[])[4], VERSION); // after the 4-byte magic
/// ```
pub const VERSION: u8 = 1;
const HEADER: usize = 4 + 4 + 4;
const TRAILER: usize = 8;

/// The default bound on a checkpoint file's size: 4 GiB.
///
/// ```
/// use vsync::checkpoint_file::{CheckpointFile, DEFAULT_MAX_SIZE};
/// assert_eq!(CheckpointFile::new("g.ckpt").max_size(), DEFAULT_MAX_SIZE);
/// ```
pub const DEFAULT_MAX_SIZE: u64 = 4 << 30;

/// What is wrong with the bytes of a checkpoint.
///
/// ```
/// use vsync::checkpoint_file::{decode, encode, FormatError};
/// assert_eq!(decode(b"NOPE and more bytes"), Err(FormatError::BadMagic));
/// let mut bytes = encode(&[b"state"]);
/// bytes[12] ^= 1; // damage a length byte
/// assert!(matches!(decode(&bytes), Err(FormatError::ChecksumMismatch { .. })));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than an empty checkpoint.
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// The file does not start with the checkpoint magic.
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion(u8),
    /// The trailing checksum does not match the contents.
    ChecksumMismatch {
        /// The checksum stored in the file.
        stored: u64,
        /// The checksum of the contents.
        computed: u64,
    },
    /// More chunks are declared than the file could hold.
    BadChunkCount {
        /// The count declared.
        count: u32,
    },
    /// A chunk's length runs past the end of the data.
    ChunkOverrun {
        /// The chunk's index.
        index: usize,
        /// Its declared length.
        len: u64,
        /// Bytes left.
        remaining: usize,
    },
    /// Bytes are left between the last chunk and the checksum.
    TrailingBytes(usize),
    /// The file is encrypted (a secure group's checkpoint) but no key was given.
    Encrypted,
    /// The file is not encrypted, but this secure group's checkpoints must be.
    NotEncrypted,
    /// The encrypted checkpoint does not decrypt with the group key (wrong key, or damaged).
    DecryptFailed,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::TooShort { len } => write!(
                f,
                "only {len} bytes, fewer than the {} of an empty checkpoint (truncated?)",
                HEADER + TRAILER
            ),
            FormatError::BadMagic => f.write_str("not a vsync checkpoint (bad magic)"),
            FormatError::UnsupportedVersion(v) => {
                write!(f, "unsupported checkpoint format version {v}")
            }
            FormatError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#018x}, computed {computed:#018x}): truncated or damaged"
            ),
            FormatError::BadChunkCount { count } => {
                write!(f, "{count} chunks declared, more than the file can hold")
            }
            FormatError::ChunkOverrun {
                index,
                len,
                remaining,
            } => write!(
                f,
                "chunk {index} declares {len} bytes but only {remaining} remain"
            ),
            FormatError::TrailingBytes(n) => {
                write!(f, "{n} unexpected bytes after the last chunk")
            }
            FormatError::Encrypted => {
                f.write_str("the checkpoint is encrypted and no group key was given")
            }
            FormatError::NotEncrypted => f.write_str(
                "the checkpoint is not encrypted, but this secure group's checkpoints must be",
            ),
            FormatError::DecryptFailed => f.write_str(
                "the encrypted checkpoint does not decrypt with the group key (wrong key or damaged)",
            ),
        }
    }
}

impl std::error::Error for FormatError {}

/// Why a checkpoint could not be written or loaded.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("vsck-err-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use vsync::checkpoint_file::{CheckpointError, CheckpointFile};
/// std::fs::write(dir.join("g.ckpt"), b"garbage").unwrap();
/// let err = CheckpointFile::new(dir.join("g.ckpt")).load().unwrap_err();
/// assert!(matches!(err, CheckpointError::Corrupt { .. }));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A file operation failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The file is not a valid checkpoint.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: FormatError,
    },
    /// The file is larger than the configured bound.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The bound.
        max: u64,
    },
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Io { op, path, source } => {
                write!(f, "cannot {op} checkpoint {}: {source}", path.display())
            }
            CheckpointError::Corrupt { path, what } => {
                write!(f, "checkpoint {} is corrupt: {what}", path.display())
            }
            CheckpointError::TooLarge { path, len, max } => write!(
                f,
                "checkpoint {} is {len} bytes, more than the limit of {max}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointError::Io { source, .. } => Some(source),
            CheckpointError::Corrupt { what, .. } => Some(what),
            CheckpointError::TooLarge { .. } => None,
        }
    }
}

/// Encodes `chunks` in the checkpoint format.
///
/// ```
/// use vsync::checkpoint_file::{decode, encode};
/// let bytes = encode(&[b"a", b""]);
/// assert_eq!(decode(&bytes).unwrap(), vec![b"a".to_vec(), vec![]]);
/// ```
pub fn encode(chunks: &[&[u8]]) -> Vec<u8> {
    let body: usize = chunks.iter().map(|c| 8 + c.len()).sum();
    let mut out = Vec::with_capacity(HEADER + body + TRAILER);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    debug_assert!(chunks.len() <= u32::MAX as usize);
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for c in chunks {
        out.extend_from_slice(&(c.len() as u64).to_le_bytes());
        out.extend_from_slice(c);
    }
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Decodes a checkpoint. Never panics; allocates no more than the input's size.
///
/// ```
/// use vsync::checkpoint_file::{decode, encode, FormatError};
/// let bytes = encode(&[b"one", b"two"]);
/// assert_eq!(decode(&bytes).unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
/// assert_eq!(decode(&bytes[..5]), Err(FormatError::TooShort { len: 5 }));
/// ```
pub fn decode(bytes: &[u8]) -> Result<Vec<Vec<u8>>, FormatError> {
    if bytes.len() < HEADER + TRAILER {
        if bytes.len() >= 4 && bytes[..4] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        return Err(FormatError::TooShort { len: bytes.len() });
    }
    if bytes[..4] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(FormatError::UnsupportedVersion(bytes[4]));
    }
    let (content, trailer) = bytes.split_at(bytes.len() - TRAILER);
    let stored = u64::from_le_bytes(trailer.try_into().unwrap_or([0; 8]));
    let computed = xxh3_64(content);
    if stored != computed {
        return Err(FormatError::ChecksumMismatch { stored, computed });
    }
    let count = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let mut rest = &content[HEADER..];
    // Every chunk takes at least its 8-byte length.
    if count as usize > rest.len() / 8 {
        return Err(FormatError::BadChunkCount { count });
    }
    let mut chunks = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let (len_bytes, tail) = rest.split_at(8.min(rest.len()));
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0xff; 8]));
        if len_bytes.len() < 8 || len > tail.len() as u64 {
            return Err(FormatError::ChunkOverrun {
                index,
                len,
                remaining: tail.len(),
            });
        }
        let (chunk, tail) = tail.split_at(len as usize);
        chunks.push(chunk.to_vec());
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(FormatError::TrailingBytes(rest.len()));
    }
    Ok(chunks)
}

/// A persistent group's checkpoint file. See the [module docs](self).
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("vsck-struct-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use vsync::checkpoint_file::CheckpointFile;
/// let ckpt = CheckpointFile::new(dir.join("g.ckpt"));
/// ckpt.write(&[b"state"]).unwrap();
/// assert_eq!(ckpt.load().unwrap(), Some(vec![b"state".to_vec()]));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    max_size: u64,
    key: Option<crate::secure::GroupKey>,
}

/// The magic of an encrypted checkpoint: `"VSCE" 1 0 0 0`, then a sealed plain checkpoint
/// (`nonce (12) | AES-256-GCM ciphertext | tag (16)`, the 8-byte header authenticated).
const ENC_MAGIC: [u8; 4] = *b"VSCE";
const ENC_HEADER: [u8; 8] = *b"VSCE\x01\0\0\0";

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

impl CheckpointFile {
    /// The checkpoint file at `path` (nothing is touched until a write or load).
    ///
    /// ```
    /// use vsync::checkpoint_file::CheckpointFile;
    /// let ckpt = CheckpointFile::new("/var/lib/myapp/g.ckpt");
    /// assert_eq!(ckpt.path(), std::path::Path::new("/var/lib/myapp/g.ckpt"));
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CheckpointFile {
            path: path.into(),
            max_size: DEFAULT_MAX_SIZE,
            key: None,
        }
    }

    /// Encrypts checkpoints with a secure group's key (`SetSecure(key)`): written files are
    /// AES-256-GCM sealed, and loads refuse files that are not, or that do not decrypt.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("vsck-key-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use vsync::checkpoint_file::CheckpointFile;
    /// let sealed = CheckpointFile::new(dir.join("g.ckpt")).with_key([9; 32]);
    /// sealed.write(&[b"secret"]).unwrap();
    /// assert_eq!(sealed.load().unwrap(), Some(vec![b"secret".to_vec()]));
    /// assert!(CheckpointFile::new(dir.join("g.ckpt")).load().is_err()); // no key
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn with_key(mut self, key: [u8; 32]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the largest file [`load`](Self::load) will read.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("vsck-max-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use vsync::checkpoint_file::{CheckpointError, CheckpointFile};
    /// let ckpt = CheckpointFile::new(dir.join("g.ckpt"));
    /// ckpt.write(&[&[0u8; 100]]).unwrap();
    /// let small = CheckpointFile::new(dir.join("g.ckpt")).with_max_size(64);
    /// assert!(matches!(small.load(), Err(CheckpointError::TooLarge { .. })));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// The largest file [`load`](Self::load) will read.
    ///
    /// ```
    /// use vsync::checkpoint_file::CheckpointFile;
    /// assert_eq!(CheckpointFile::new("g.ckpt").with_max_size(1 << 20).max_size(), 1 << 20);
    /// ```
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The checkpoint file.
    ///
    /// ```
    /// use vsync::checkpoint_file::CheckpointFile;
    /// assert_eq!(CheckpointFile::new("g.ckpt").path(), std::path::Path::new("g.ckpt"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The previous checkpoint: `{path}.bak`.
    ///
    /// ```
    /// use vsync::checkpoint_file::CheckpointFile;
    /// assert_eq!(CheckpointFile::new("g.ckpt").backup_path(), std::path::Path::new("g.ckpt.bak"));
    /// ```
    pub fn backup_path(&self) -> PathBuf {
        with_suffix(&self.path, ".bak")
    }

    /// The temporary file a new checkpoint is written to: `{path}.tmp`.
    ///
    /// ```
    /// use vsync::checkpoint_file::CheckpointFile;
    /// assert_eq!(CheckpointFile::new("g.ckpt").tmp_path(), std::path::Path::new("g.ckpt.tmp"));
    /// ```
    pub fn tmp_path(&self) -> PathBuf {
        with_suffix(&self.path, ".tmp")
    }

    /// Writes a new checkpoint made of `chunks`, atomically replacing the current one, which
    /// becomes the backup. On error the current checkpoint is left in place.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("vsck-write-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use vsync::checkpoint_file::CheckpointFile;
    /// let ckpt = CheckpointFile::new(dir.join("g.ckpt"));
    /// ckpt.write(&[b"v1"]).unwrap();
    /// ckpt.write(&[b"v2"]).unwrap();
    /// assert!(ckpt.backup_path().exists() && !ckpt.tmp_path().exists());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn write(&self, chunks: &[&[u8]]) -> Result<(), CheckpointError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { op, path, source }
        };
        let mut bytes = encode(chunks);
        if let Some(key) = &self.key {
            let sealed =
                crate::secure::seal(key, &ENC_HEADER, &bytes).map_err(io("encrypt", &self.path))?;
            bytes = ENC_HEADER.to_vec();
            bytes.extend_from_slice(&sealed);
        }
        let tmp = self.tmp_path();
        let written = (|| -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io("write", &tmp)(e));
        }
        if self.path.exists() {
            // Keep the current checkpoint as the backup. A hard link (with a copy as the
            // fallback) rather than a rename keeps `path` in place until the atomic rename
            // below, so a crash never leaves no checkpoint at all.
            let bak = self.backup_path();
            match fs::remove_file(&bak) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove old backup", &bak)(e)),
            }
            if fs::hard_link(&self.path, &bak).is_err() {
                fs::copy(&self.path, &bak).map_err(io("back up", &self.path))?;
                File::open(&bak)
                    .and_then(|f| f.sync_all())
                    .map_err(io("sync", &bak))?;
            }
        }
        fs::rename(&tmp, &self.path).map_err(io("replace", &self.path))?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync the directory of", &self.path))
    }

    /// Loads the checkpoint: `None` if there is no file, its chunks if it is valid.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("vsck-load-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use vsync::checkpoint_file::CheckpointFile;
    /// let ckpt = CheckpointFile::new(dir.join("g.ckpt"));
    /// assert_eq!(ckpt.load().unwrap(), None); // no file yet
    /// ckpt.write(&[b"a", b"b"]).unwrap();
    /// assert_eq!(ckpt.load().unwrap().unwrap().len(), 2);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn load(&self) -> Result<Option<Vec<Vec<u8>>>, CheckpointError> {
        self.load_from(&self.path)
    }

    /// Loads the backup (the previous checkpoint), like [`load`](Self::load).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("vsck-bak-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use vsync::checkpoint_file::CheckpointFile;
    /// let ckpt = CheckpointFile::new(dir.join("g.ckpt"));
    /// ckpt.write(&[b"v1"]).unwrap();
    /// ckpt.write(&[b"v2"]).unwrap();
    /// assert_eq!(ckpt.load_backup().unwrap(), Some(vec![b"v1".to_vec()]));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn load_backup(&self) -> Result<Option<Vec<Vec<u8>>>, CheckpointError> {
        self.load_from(&self.backup_path())
    }

    fn load_from(&self, path: &Path) -> Result<Option<Vec<Vec<u8>>>, CheckpointError> {
        let io = |op: &'static str| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { op, path, source }
        };
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open")(e)),
        };
        let len = f.metadata().map_err(io("stat"))?.len();
        if len > self.max_size {
            return Err(CheckpointError::TooLarge {
                path: path.to_path_buf(),
                len,
                max: self.max_size,
            });
        }
        let mut bytes = Vec::with_capacity(len as usize);
        f.take(self.max_size.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io("read"))?;
        if bytes.len() as u64 > self.max_size {
            return Err(CheckpointError::TooLarge {
                path: path.to_path_buf(),
                len: bytes.len() as u64,
                max: self.max_size,
            });
        }
        let corrupt = |what| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            what,
        };
        let encrypted = bytes.len() >= 8 && bytes[..4] == ENC_MAGIC;
        let plain = match (&self.key, encrypted) {
            (None, true) => return Err(corrupt(FormatError::Encrypted)),
            (Some(_), false) => return Err(corrupt(FormatError::NotEncrypted)),
            (None, false) => bytes,
            (Some(key), true) => {
                if bytes[..8] != ENC_HEADER {
                    return Err(corrupt(FormatError::UnsupportedVersion(bytes[4])));
                }
                crate::secure::open(key, &ENC_HEADER, &bytes[8..])
                    .ok_or_else(|| corrupt(FormatError::DecryptFailed))?
            }
        };
        decode(&plain).map(Some).map_err(corrupt)
    }
}
