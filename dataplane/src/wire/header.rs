//! The fixed 40-byte packet header (network byte order, no alignment requirement).
//!
//! ```text
//!  0       4    5    6    7       8       10      12      16              24              32              40
//!  +-------+----+----+----+-------+-------+-------+-------+---------------+---------------+---------------+
//!  | magic |ver |kind|flg |frames |bodylen|fanout | view  |   group id    |  sender (mem) | packet number |
//!  +-------+----+----+----+-------+-------+-------+-------+---------------+---------------+---------------+
//! ```
//!
//! `fanout` is 0 except in relay-tree datagrams (see [`FANOUT_OFFSET`]).

use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// "VSYN".
pub const MAGIC: u32 = 0x5653_594E;
/// The wire version this build speaks.
pub const VERSION: u8 = 1;
/// Size of [`PacketHeader`] in bytes.
pub const HEADER_LEN: usize = 40;

/// Header flag: the trailer is a 16-byte AES-GCM tag instead of an 8-byte xxh3.
pub const FLAG_AUTH: u8 = 0b0000_0001;
/// Header flag: the body is encrypted with the group key.
pub const FLAG_ENCRYPTED: u8 = 0b0000_0010;

/// What a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketKind {
    /// Group data-plane traffic (data, receipt reports, NAKs, heartbeats) to the group.
    Group = 1,
    /// Data-plane traffic addressed to one member (point-to-point streams, NAKs, repairs).
    Direct = 2,
}

impl PacketKind {
    /// Decodes a kind byte.
    pub fn from_u8(b: u8) -> Option<PacketKind> {
        match b {
            1 => Some(PacketKind::Group),
            2 => Some(PacketKind::Direct),
            _ => None,
        }
    }
}

/// The packet header, as laid out on the wire.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct PacketHeader {
    /// [`MAGIC`].
    pub magic: U32,
    /// [`VERSION`].
    pub version: u8,
    /// A [`PacketKind`].
    pub kind: u8,
    /// [`FLAG_AUTH`] | [`FLAG_ENCRYPTED`].
    pub flags: u8,
    /// Number of frames in the body.
    pub frame_count: u8,
    /// Body length in bytes (frames only; excludes header and trailer).
    pub body_len: U16,
    /// 0, or for a relay-tree datagram (first transmission of the sender's group-stream data
    /// in a large unicast group) the fanout k of the tree: each member that finds fresh data
    /// in it forwards it unchanged to its children in the sender's tree
    /// (`crate::protocol::tree`). Authenticated with the rest of the header.
    pub fanout: U16,
    /// The sender's view id of the group.
    pub view_id: U32,
    /// The group.
    pub group_id: U64,
    /// The sending member.
    pub sender: U64,
    /// Per-sender monotonically increasing packet number (AEAD nonce and replay check).
    pub packet_number: U64,
}

const _: () = assert!(core::mem::size_of::<PacketHeader>() == HEADER_LEN);

/// Byte offset of [`PacketHeader::fanout`] in a datagram.
pub const FANOUT_OFFSET: usize = 10;

/// Writes the relay-tree fanout into a finished (not yet sealed) datagram's header.
pub fn set_fanout(datagram: &mut [u8], fanout: u16) {
    datagram[FANOUT_OFFSET..FANOUT_OFFSET + 2].copy_from_slice(&fanout.to_be_bytes());
}

/// The (unauthenticated) fanout field of a received datagram; 0 if it is too short to have one.
pub fn peek_fanout(datagram: &[u8]) -> u16 {
    match datagram.get(FANOUT_OFFSET..FANOUT_OFFSET + 2) {
        Some(b) if datagram.len() >= HEADER_LEN => u16::from_be_bytes([b[0], b[1]]),
        _ => 0,
    }
}
