//! Secure groups (the manual's "Secure Groups", `SetSecure()` / `SetSecure(key)`): the
//! group key, its check value, and the encryption of persistent checkpoints.
//!
//! * The group key is an AES-256-GCM key (32 bytes; the manual's keys are 24-byte AES-192
//!   keys, vsync's data plane uses AES-256). The data plane encrypts and authenticates every
//!   datagram of the group with it (see `dataplane/WIRE.md`).
//! * Members must hold the same key. Each joiner sends the key's **check value** (the
//!   AES-GCM tag of a fixed message under the key and a nonce the data plane never uses —
//!   the usual key-check-value construction, which reveals nothing useful about the key) as
//!   part of its group signature, so a joiner with another key, or without one, is refused
//!   by the oracle with an error saying the keys differ, instead of silently failing to
//!   decrypt.
//! * `SetSecure(key)` — the application supplies the key: it is never written anywhere, and
//!   a persistent group's checkpoint file is encrypted with it ([`seal`], [`open`]).
//! * `SetSecure()` — vsync draws a random key and relies on file permissions, as the manual
//!   describes: the key is kept beside the persistent checkpoint in `{path}.key` (mode
//!   0600, created once, read by every later member); the checkpoint is not encrypted. (The
//!   manual stores the key inside the checkpoint file; a separate file keeps the checkpoint
//!   format one thing and lets joiners read the key before any checkpoint exists.)

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

/// A group key (AES-256-GCM).
pub type GroupKey = [u8; 32];

/// Bytes of the nonce at the front of a sealed blob.
const NONCE_LEN: usize = 12;
/// Bytes of the tag at the end of a sealed blob.
const TAG_LEN: usize = 16;

fn cipher(key: &GroupKey) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

/// The key check value: 8 bytes that identify a key without revealing it.
pub(crate) fn check_value(key: &GroupKey) -> u64 {
    // A nonce the data plane never produces (it would need sender 0xffffffff and packet
    // number u64::MAX), over a fixed associated message.
    let nonce: Nonce<aes_gcm::aead::consts::U12> = [0xff; NONCE_LEN].into();
    let mut empty: [u8; 0] = [];
    let tag = cipher(key)
        .encrypt_inout_detached(&nonce, b"vsync group key check", (&mut empty[..]).into())
        .map(|t| t.to_vec())
        .unwrap_or_default();
    let mut b = [0u8; 8];
    b.copy_from_slice(&tag[..8]);
    u64::from_le_bytes(b)
}

/// Fills `buf` from the kernel's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    File::open("/dev/urandom")?.read_exact(buf)
}

/// Parses 64 hexadecimal digits into a key (`VSYNC_AESKEY`); `None` if malformed.
pub(crate) fn parse_hex_key(s: &str) -> Option<GroupKey> {
    let b = s.as_bytes();
    if b.len() != 64 || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        k[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(k)
}

/// A fresh random group key.
pub(crate) fn random_key() -> io::Result<GroupKey> {
    let mut k = [0u8; 32];
    random_bytes(&mut k)?;
    Ok(k)
}

/// Encrypts `plain`: `nonce (12) | ciphertext | tag (16)`, with a random nonce and `aad`
/// authenticated alongside.
pub(crate) fn seal(key: &GroupKey, aad: &[u8], plain: &[u8]) -> io::Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let n: Nonce<aes_gcm::aead::consts::U12> = nonce.into();
    let tag = cipher(key)
        .encrypt_inout_detached(&n, aad, (&mut out[NONCE_LEN..]).into())
        .map_err(|_| io::Error::other("AES-GCM refused the input (too large)"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Decrypts a [`seal`]ed blob; `None` if it is malformed or the key or `aad` is wrong.
pub(crate) fn open(key: &GroupKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let n: Nonce<aes_gcm::aead::consts::U12> = <[u8; NONCE_LEN]>::try_from(nonce).ok()?.into();
    let tag = Tag::<aes_gcm::aead::consts::U16>::try_from(tag).ok()?;
    let mut plain = body.to_vec();
    cipher(key)
        .decrypt_inout_detached(&n, aad, (&mut plain[..]).into(), &tag)
        .ok()?;
    Some(plain)
}

/// `SetSecure()`'s shared key: reads `path`, or creates it (mode 0600, synced) with a random
/// key if it does not exist. Two members racing to create it agree: only one creation wins.
pub(crate) fn load_or_create_key_file(path: &Path) -> io::Result<GroupKey> {
    let read = |path: &Path| -> io::Result<GroupKey> {
        let mut k = [0u8; 32];
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        if len != 32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {len} bytes, expected a 32-byte key", path.display()),
            ));
        }
        f.read_exact(&mut k)?;
        Ok(k)
    };
    match read(path) {
        Ok(k) => return Ok(k),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = random_key()?;
    // A temporary name of this creator alone (several members may live in one process), and
    // `create_new`: two creators sharing one temporary file would write one inode, so the
    // key linked in could differ from the key one of them returns.
    let tmp = {
        let mut nonce = [0u8; 8];
        random_bytes(&mut nonce)?;
        let mut s = path.as_os_str().to_owned();
        s.push(format!(
            ".{}.{:016x}.tmp",
            std::process::id(),
            u64::from_le_bytes(nonce)
        ));
        std::path::PathBuf::from(s)
    };
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    drop(f);
    // A hard link fails if the key file appeared meanwhile: then the other creator won.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let k = [7u8; 32];
        let s = seal(&k, b"hdr", b"state bytes").unwrap();
        assert!(
            !s.windows(5).any(|w| w == b"state"),
            "ciphertext hides the plaintext"
        );
        assert_eq!(open(&k, b"hdr", &s).unwrap(), b"state bytes");
        assert!(open(&[8u8; 32], b"hdr", &s).is_none(), "wrong key");
        assert!(open(&k, b"other", &s).is_none(), "wrong aad");
        let mut bad = s.clone();
        bad[14] ^= 1;
        assert!(open(&k, b"hdr", &bad).is_none(), "tampered");
        assert!(open(&k, b"hdr", &s[..10]).is_none(), "short");
        assert_ne!(
            seal(&k, b"hdr", b"x").unwrap(),
            seal(&k, b"hdr", b"x").unwrap()
        );
    }

    #[test]
    fn hex_keys() {
        let k = parse_hex_key(&"0a".repeat(32)).unwrap();
        assert_eq!(k, [10u8; 32]);
        assert!(parse_hex_key("0a").is_none());
        assert!(parse_hex_key(&"zz".repeat(32)).is_none());
        assert!(parse_hex_key(&"+1".repeat(32)).is_none());
    }

    #[test]
    fn check_values_differ_per_key_and_are_stable() {
        assert_eq!(check_value(&[1; 32]), check_value(&[1; 32]));
        assert_ne!(check_value(&[1; 32]), check_value(&[2; 32]));
    }

    /// Review: creators in one process shared the temporary file `{path}.{pid}.tmp`, so
    /// one could link in the key another wrote and still return its own.
    #[test]
    fn concurrent_creators_in_one_process_agree() {
        for round in 0..5 {
            let d =
                std::env::temp_dir().join(format!("vsync-keyrace-{}-{round}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            let p = d.join("g.ckpt.key");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (p, b) = (p.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        b.wait();
                        load_or_create_key_file(&p)
                    })
                })
                .collect();
            let keys: Vec<GroupKey> = threads
                .into_iter()
                .map(|t| t.join().unwrap().expect("key"))
                .collect();
            let on_disk = std::fs::read(&p).unwrap();
            for k in &keys {
                assert_eq!(&k[..], &on_disk[..], "a creator returned another key");
            }
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn key_file_is_created_once_and_shared() {
        let d = std::env::temp_dir().join(format!("vsync-keyfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("g.ckpt.key");
        let a = load_or_create_key_file(&p).unwrap();
        let b = load_or_create_key_file(&p).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&p, b"short").unwrap();
        assert!(load_or_create_key_file(&p).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
