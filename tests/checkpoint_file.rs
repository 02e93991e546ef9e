//! Tests of the persistent-group checkpoint file (`vsync::checkpoint_file`) with real files:
//! round trip, the backup, corruption (detected, backup untouched), truncation, empty
//! checkpoints, size bound, and the decoder on arbitrary bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use vsync::checkpoint_file::{decode, encode, CheckpointError, CheckpointFile, FormatError};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "vsync-ckpt-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn v(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    chunks.iter().map(|c| c.to_vec()).collect()
}

#[test]
fn round_trip_and_missing_file() {
    let d = TempDir::new("rt");
    let c = CheckpointFile::new(d.path().join("g.ckpt"));
    assert_eq!(c.load().unwrap(), None);
    assert_eq!(c.load_backup().unwrap(), None);
    let big = vec![0xabu8; 100_000];
    c.write(&[b"first", &big, b""]).unwrap();
    assert_eq!(c.load().unwrap(), Some(v(&[b"first", &big, b""])));
    assert!(!c.tmp_path().exists(), "no temporary file left behind");
    assert_eq!(c.load_backup().unwrap(), None, "first write has no backup");
}

#[test]
fn backup_keeps_the_previous_checkpoint() {
    let d = TempDir::new("bak");
    let c = CheckpointFile::new(d.path().join("g.ckpt"));
    c.write(&[b"one"]).unwrap();
    c.write(&[b"two"]).unwrap();
    assert_eq!(c.backup_path(), d.path().join("g.ckpt.bak"));
    assert_eq!(c.load().unwrap(), Some(v(&[b"two"])));
    assert_eq!(c.load_backup().unwrap(), Some(v(&[b"one"])));
    c.write(&[b"three", b"3"]).unwrap();
    assert_eq!(c.load().unwrap(), Some(v(&[b"three", b"3"])));
    assert_eq!(c.load_backup().unwrap(), Some(v(&[b"two"])));
    // Only the three files' worth: no stray temporaries.
    let mut names: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["g.ckpt", "g.ckpt.bak"]);
}

#[test]
fn corruption_is_detected_and_backup_untouched() {
    let d = TempDir::new("corrupt");
    let c = CheckpointFile::new(d.path().join("state.ckpt"));
    c.write(&[b"good old state"]).unwrap();
    c.write(&[b"new state", b"more"]).unwrap();
    let bak_before = fs::read(c.backup_path()).unwrap();
    let mut bytes = fs::read(c.path()).unwrap();
    bytes[20] ^= 1;
    fs::write(c.path(), &bytes).unwrap();

    let e = c.load().unwrap_err();
    match &e {
        CheckpointError::Corrupt { path, what } => {
            assert_eq!(path, c.path());
            assert!(matches!(what, FormatError::ChecksumMismatch { .. }));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("state.ckpt") && text.contains("corrupt") && text.contains("checksum"),
        "{text}"
    );
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(fs::read(c.backup_path()).unwrap(), bak_before);
    assert_eq!(c.load_backup().unwrap(), Some(v(&[b"good old state"])));
}

#[test]
fn truncated_file_is_corrupt() {
    let d = TempDir::new("trunc");
    let c = CheckpointFile::new(d.path().join("t.ckpt"));
    c.write(&[b"some state that is long enough"]).unwrap();
    let bytes = fs::read(c.path()).unwrap();
    for cut in [1, 8, 20, bytes.len() - 1] {
        fs::write(c.path(), &bytes[..bytes.len() - cut]).unwrap();
        assert!(
            matches!(c.load(), Err(CheckpointError::Corrupt { .. })),
            "cut {cut}"
        );
    }
    fs::write(c.path(), b"").unwrap();
    assert!(matches!(
        c.load(),
        Err(CheckpointError::Corrupt {
            what: FormatError::TooShort { len: 0 },
            ..
        })
    ));
}

#[test]
fn empty_checkpoint() {
    let d = TempDir::new("empty");
    let c = CheckpointFile::new(d.path().join("e.ckpt"));
    c.write(&[]).unwrap();
    assert_eq!(c.load().unwrap(), Some(vec![]));
    assert_eq!(fs::metadata(c.path()).unwrap().len(), 20);
}

#[test]
fn size_bound_is_enforced() {
    let d = TempDir::new("size");
    let c = CheckpointFile::new(d.path().join("s.ckpt")).with_max_size(100);
    c.write(&[&[7u8; 200]]).unwrap();
    assert!(matches!(
        c.load(),
        Err(CheckpointError::TooLarge {
            len: 228,
            max: 100,
            ..
        })
    ));
}

#[test]
fn write_into_missing_directory_is_an_io_error() {
    let d = TempDir::new("io");
    let c = CheckpointFile::new(d.path().join("nope").join("x.ckpt"));
    let e = c.write(&[b"x"]).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Io { op: "write", .. }),
        "{e:?}"
    );
}

#[test]
fn hostile_headers() {
    let mut b = encode(&[b"abc"]);
    b[4] = 9;
    assert_eq!(decode(&b), Err(FormatError::UnsupportedVersion(9)));
    assert_eq!(
        decode(b"XXXXXXXXXXXXXXXXXXXXXXXX"),
        Err(FormatError::BadMagic)
    );
    // A huge chunk count with a valid checksum: refused before allocating.
    let mut b = encode(&[]);
    b.truncate(12);
    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    assert_eq!(
        decode(&b),
        Err(FormatError::BadChunkCount { count: u32::MAX })
    );
    // A huge chunk length with a valid checksum.
    let mut b = encode(&[b"abcdefgh"]);
    b.truncate(b.len() - 8);
    b[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    assert!(matches!(
        decode(&b),
        Err(FormatError::ChunkOverrun { index: 0, .. })
    ));
}

/// Re-seals `content` (header + chunks) with a correct checksum, so the structural checks
/// are reached.
fn seal(mut content: Vec<u8>) -> Vec<u8> {
    let sum = xxhash_rust::xxh3::xxh3_64(&content);
    content.extend_from_slice(&sum.to_le_bytes());
    content
}

proptest! {
    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
        // Also with a valid header and checksum around arbitrary content.
        let mut c = b"VSCK\x01\0\0\0".to_vec();
        c.extend_from_slice(&bytes);
        if let Ok(chunks) = decode(&seal(c.clone())) {
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            prop_assert_eq!(encode(&refs), seal(c));
        }
    }

    #[test]
    fn round_trip(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 0..10)) {
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        prop_assert_eq!(decode(&encode(&refs)).unwrap(), chunks);
    }

    #[test]
    fn any_single_byte_flip_is_detected(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..5),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        let mut b = encode(&refs);
        let i = pos.index(b.len());
        b[i] ^= 1 << bit;
        prop_assert!(decode(&b).is_err());
    }
}
