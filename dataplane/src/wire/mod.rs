//! The vsync datagram format.
//!
//! A datagram is a fixed [`PacketHeader`], a body of frames, and a trailer that seals the
//! whole: an xxh3-64 checksum in plain mode, or an AES-256-GCM tag when a system key
//! (authentication) or a group key (authentication + payload encryption) is configured.
//! The byte layout is drawn in `dataplane/WIRE.md`.
//!
//! * [`header`] — the packet header and its constants.
//! * [`frame`] — frame kinds, the [`frame::PacketWriter`] that packs frames into a datagram and
//!   the [`frame::FrameReader`] that parses them.
//! * [`seal`] — sealing and opening (checksum or AEAD), key configuration.
//! * [`replay`] — per-sender sliding replay windows for authenticated mode.
//! * [`drops`] — the reasons a received datagram can be dropped, and their counters.
//!
//! Architecture invariant: decoding never panics on any byte string; every rejected datagram
//! or frame increments exactly one [`drops::DropReason`] counter.

pub mod drops;
pub mod frame;
pub mod header;
pub mod replay;
pub mod seal;

pub use drops::{DropCounters, DropReason};
pub use frame::{
    AckEntry, Frame, FrameReader, NakRange, PacketWriter, ACK_ENTRY_LEN, FRAG_SUBHEADER_LEN,
    FRAME_PREFIX_LEN, MSG_SUBHEADER_LEN, RELAY_REQ_LEN, RELAY_SUBHEADER_LEN,
};
pub use header::{PacketHeader, PacketKind, HEADER_LEN, MAGIC, VERSION};
pub use seal::{Keys, SealMode, Sealer, TRAILER_MAX};
