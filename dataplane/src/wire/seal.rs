//! Sealing (on send) and opening (on receive) of datagrams.
//!
//! Three modes, chosen per datagram from the configured keys:
//!
//! | keys configured            | trailer               | body             | header flags        |
//! |----------------------------|-----------------------|------------------|---------------------|
//! | none                       | xxh3-64 of header+body| clear            | —                   |
//! | system key                 | AES-256-GCM tag (16 B)| clear, in AAD    | `AUTH`              |
//! | group key (any system key) | AES-256-GCM tag (16 B)| encrypted        | `AUTH | ENCRYPTED`  |
//!
//! The GCM nonce is the sender's process number (4 bytes) followed by its packet number
//! (8 bytes). Packet numbers are per-process and start from the wall clock in nanoseconds at
//! process start, so they do not repeat across restarts of the same process (clock stepped
//! backwards by more than a process lifetime is the documented exception).
//!
//! Receivers enforce the policy: with a system key configured, unauthenticated datagrams
//! are dropped; with a group key configured, unencrypted datagrams for that group are dropped.

use std::collections::HashMap;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zerocopy::FromBytes;

use crate::wire::header::{PacketHeader, FLAG_AUTH, FLAG_ENCRYPTED, HEADER_LEN, MAGIC, VERSION};
use crate::wire::DropReason;
use crate::{GroupId, MemberId};

/// Length of the plain-mode checksum trailer.
pub const CHECKSUM_LEN: usize = 8;
/// Length of the AES-GCM tag trailer.
pub const TAG_LEN: usize = 16;
/// The longest trailer any mode uses.
pub const TRAILER_MAX: usize = TAG_LEN;

/// How a datagram is sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealMode {
    /// xxh3 checksum only (integrity against corruption, no authentication).
    Checksum,
    /// AES-256-GCM with the system key over header and clear body.
    Authenticated,
    /// AES-256-GCM with the group key; body encrypted.
    Encrypted,
}

impl SealMode {
    /// Trailer length in this mode.
    pub fn trailer_len(self) -> usize {
        match self {
            SealMode::Checksum => CHECKSUM_LEN,
            _ => TAG_LEN,
        }
    }
    /// Header flags in this mode.
    pub fn flags(self) -> u8 {
        match self {
            SealMode::Checksum => 0,
            SealMode::Authenticated => FLAG_AUTH,
            SealMode::Encrypted => FLAG_AUTH | FLAG_ENCRYPTED,
        }
    }
}

/// The keys an endpoint seals and opens with.
#[derive(Default)]
pub struct Keys {
    system: Option<Box<Aes256Gcm>>,
    groups: HashMap<GroupId, Box<Aes256Gcm>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keys")
            .field("system", &self.system.is_some())
            .field("groups", &self.groups.len())
            .finish()
    }
}

impl Keys {
    /// Sets (or clears) the system key that authenticates every datagram.
    pub fn set_system_key(&mut self, key: Option<&[u8; 32]>) {
        self.system = key.map(|k| Box::new(Aes256Gcm::new(&(*k).into())));
    }
    /// Sets (or clears) a group's key, which also encrypts that group's payloads.
    pub fn set_group_key(&mut self, group: GroupId, key: Option<&[u8; 32]>) {
        match key {
            Some(k) => {
                self.groups
                    .insert(group, Box::new(Aes256Gcm::new(&(*k).into())));
            }
            None => {
                self.groups.remove(&group);
            }
        }
    }
    /// The mode datagrams of `group` are sealed with.
    pub fn mode_for(&self, group: GroupId) -> SealMode {
        if self.groups.contains_key(&group) {
            SealMode::Encrypted
        } else if self.system.is_some() {
            SealMode::Authenticated
        } else {
            SealMode::Checksum
        }
    }
}

fn nonce(sender: MemberId, packet_number: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&sender.process().to_be_bytes());
    n[4..].copy_from_slice(&packet_number.to_be_bytes());
    n.into()
}

/// Seals and opens datagrams with a [`Keys`] set.
pub struct Sealer;

impl Sealer {
    /// Seals `buf[..len]` (header written by [`crate::wire::PacketWriter::finish`] with
    /// `mode.flags()`) by appending the trailer; returns the datagram length.
    ///
    /// `buf` must have room for the trailer (the writer reserved it).
    pub fn seal(keys: &Keys, mode: SealMode, buf: &mut [u8], len: usize) -> usize {
        debug_assert!(len >= HEADER_LEN && buf.len() >= len + mode.trailer_len());
        match mode {
            SealMode::Checksum => {
                let sum = xxhash_rust::xxh3::xxh3_64(&buf[..len]);
                buf[len..len + CHECKSUM_LEN].copy_from_slice(&sum.to_be_bytes());
                len + CHECKSUM_LEN
            }
            SealMode::Authenticated | SealMode::Encrypted => {
                let (sender, pn, group) = {
                    let (h, _) = PacketHeader::ref_from_prefix(&buf[..len]).expect("header fits");
                    (
                        MemberId(h.sender.get()),
                        h.packet_number.get(),
                        GroupId(h.group_id.get()),
                    )
                };
                let n = nonce(sender, pn);
                let mut empty: [u8; 0] = [];
                let tag = if mode == SealMode::Encrypted {
                    let cipher = keys
                        .groups
                        .get(&group)
                        .expect("mode_for said a group key exists");
                    let (head, rest) = buf.split_at_mut(HEADER_LEN);
                    cipher.encrypt_inout_detached(&n, head, (&mut rest[..len - HEADER_LEN]).into())
                } else {
                    // GMAC: header and clear body (contiguous) are the associated data.
                    let cipher = keys
                        .system
                        .as_ref()
                        .expect("mode_for said a system key exists");
                    cipher.encrypt_inout_detached(&n, &buf[..len], (&mut empty[..]).into())
                };
                let tag = tag.expect("AES-GCM cannot fail for datagram-sized input");
                let trailer = &mut buf[len..];
                trailer[..TAG_LEN].copy_from_slice(&tag);
                len + TAG_LEN
            }
        }
    }

    /// Checks and opens a received datagram in place. On success returns the header and the
    /// body range (decrypted if it was encrypted). Never panics on any input.
    pub fn open(
        keys: &Keys,
        datagram: &mut [u8],
    ) -> Result<(PacketHeader, std::ops::Range<usize>), DropReason> {
        if datagram.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(DropReason::TooShort);
        }
        let header = match PacketHeader::read_from_prefix(datagram) {
            Ok((h, _)) => h,
            Err(_) => return Err(DropReason::TooShort),
        };
        if header.magic.get() != MAGIC {
            return Err(DropReason::BadMagic);
        }
        if header.version != VERSION {
            return Err(DropReason::BadVersion);
        }
        let flags = header.flags;
        if flags & !(FLAG_AUTH | FLAG_ENCRYPTED) != 0 || flags == FLAG_ENCRYPTED {
            return Err(DropReason::MalformedFrame);
        }
        let mode = match flags {
            0 => SealMode::Checksum,
            FLAG_AUTH => SealMode::Authenticated,
            _ => SealMode::Encrypted,
        };
        let body_len = header.body_len.get() as usize;
        if HEADER_LEN + body_len + mode.trailer_len() != datagram.len() {
            return Err(DropReason::BadLength);
        }
        let group = GroupId(header.group_id.get());
        let expected = keys.mode_for(group);
        if mode != expected {
            // Either the sender did not authenticate/encrypt although we require it, or it
            // did and we hold no key to check it with.
            return Err(DropReason::Unauthenticated);
        }
        let len = HEADER_LEN + body_len;
        match mode {
            SealMode::Checksum => {
                let sum = xxhash_rust::xxh3::xxh3_64(&datagram[..len]);
                if datagram[len..len + CHECKSUM_LEN] != sum.to_be_bytes() {
                    return Err(DropReason::BadChecksum);
                }
            }
            SealMode::Authenticated | SealMode::Encrypted => {
                let n = nonce(MemberId(header.sender.get()), header.packet_number.get());
                let tag =
                    Tag::<aes_gcm::aead::consts::U16>::try_from(&datagram[len..len + TAG_LEN])
                        .map_err(|_| DropReason::TooShort)?;
                let mut empty: [u8; 0] = [];
                let ok = if mode == SealMode::Encrypted {
                    let cipher = keys.groups.get(&group).ok_or(DropReason::Unauthenticated)?;
                    let (head, rest) = datagram.split_at_mut(HEADER_LEN);
                    cipher
                        .decrypt_inout_detached(&n, head, (&mut rest[..body_len]).into(), &tag)
                        .is_ok()
                } else {
                    let cipher = keys.system.as_ref().ok_or(DropReason::Unauthenticated)?;
                    cipher
                        .decrypt_inout_detached(&n, &datagram[..len], (&mut empty[..]).into(), &tag)
                        .is_ok()
                };
                if !ok {
                    return Err(DropReason::AuthFailed);
                }
            }
        }
        Ok((header, HEADER_LEN..len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PacketKind, PacketWriter};
    use crate::ViewId;

    fn build(keys: &Keys, group: GroupId, pn: u64, payload: &[u8]) -> Vec<u8> {
        let mode = keys.mode_for(group);
        let mut buf = vec![0u8; 1500];
        let mut w = PacketWriter::new(&mut buf, 1500, mode.trailer_len());
        assert!(w.push_msg(false, false, 1, payload));
        let len = w.finish(
            PacketKind::Group,
            ViewId(1),
            group,
            MemberId::new(7, 1),
            pn,
            mode.flags(),
        );
        let len = Sealer::seal(keys, mode, &mut buf, len);
        buf.truncate(len);
        buf
    }

    #[test]
    fn checksum_mode_detects_corruption() {
        let keys = Keys::default();
        let mut d = build(&keys, GroupId(1), 1, b"payload");
        assert!(Sealer::open(&keys, &mut d.clone()).is_ok());
        d[45] ^= 1;
        assert_eq!(
            Sealer::open(&keys, &mut d).unwrap_err(),
            DropReason::BadChecksum
        );
    }

    #[test]
    fn authenticated_mode_rejects_forgery_truncation_and_plain() {
        let mut keys = Keys::default();
        keys.set_system_key(Some(&[3u8; 32]));
        let d = build(&keys, GroupId(1), 5, b"payload");
        let (h, body) = Sealer::open(&keys, &mut d.clone()).unwrap();
        assert_eq!(h.packet_number.get(), 5);
        assert_eq!(&d[body][12..], b"payload");
        let mut forged = d.clone();
        forged[50] ^= 0x40;
        assert_eq!(
            Sealer::open(&keys, &mut forged).unwrap_err(),
            DropReason::AuthFailed
        );
        let mut truncated = d.clone();
        truncated.pop();
        assert_eq!(
            Sealer::open(&keys, &mut truncated).unwrap_err(),
            DropReason::BadLength
        );
        let plain = build(&Keys::default(), GroupId(1), 5, b"payload");
        assert_eq!(
            Sealer::open(&keys, &mut plain.clone()).unwrap_err(),
            DropReason::Unauthenticated
        );
        let mut other = Keys::default();
        other.set_system_key(Some(&[4u8; 32]));
        assert_eq!(
            Sealer::open(&other, &mut d.clone()).unwrap_err(),
            DropReason::AuthFailed
        );
    }

    #[test]
    fn encrypted_mode_hides_and_restores_payload() {
        let mut keys = Keys::default();
        keys.set_group_key(GroupId(9), Some(&[1u8; 32]));
        let d = build(&keys, GroupId(9), 11, b"secret payload bytes");
        assert!(!d.windows(6).any(|w| w == b"secret"));
        let mut opened = d.clone();
        let (_, body) = Sealer::open(&keys, &mut opened).unwrap();
        assert_eq!(&opened[body][12..], b"secret payload bytes");
        let mut no_key = Keys::default();
        no_key.set_system_key(Some(&[1u8; 32]));
        assert_eq!(
            Sealer::open(&no_key, &mut d.clone()).unwrap_err(),
            DropReason::Unauthenticated
        );
    }

    proptest::proptest! {
        #[test]
        fn open_never_panics(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), auth: bool) {
            let mut keys = Keys::default();
            if auth { keys.set_system_key(Some(&[2u8; 32])); }
            let _ = Sealer::open(&keys, &mut bytes);
        }

        #[test]
        fn open_never_panics_on_valid_header(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..200), flags in 0u8..4) {
            let keys = Keys::default();
            let mut d = build(&keys, GroupId(1), 1, b"x");
            d[6] = flags;
            d.truncate(HEADER_LEN);
            d.extend_from_slice(&tail);
            let _ = Sealer::open(&keys, &mut d);
        }
    }
}
