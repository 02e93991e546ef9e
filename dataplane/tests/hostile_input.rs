//! Hostile input at the endpoint: arbitrary bytes, and arbitrary frame bodies inside correctly
//! sealed datagrams from a real member (a buggy or malicious peer that holds the key). The
//! endpoint must never panic, must count what it drops, and must keep working afterwards.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use proptest::prelude::*;
use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::{CutEntry, Delivery, Endpoint, GroupSpec, Protocol};
use vsync_dataplane::wire::header::{PacketHeader, HEADER_LEN, MAGIC, VERSION};
use vsync_dataplane::wire::{Keys, SealMode, Sealer};
use vsync_dataplane::{GroupId, MemberId, Timestamp, ViewId};
use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

const GROUP: GroupId = GroupId(3);

fn endpoint(key: bool) -> Endpoint<impl FnMut(&Delivery<'_>) -> bool> {
    let cfg = ProtocolConfig {
        max_message_bytes: 1 << 20,
        send_buffer_bytes: 1 << 20,
        ..ProtocolConfig::default()
    };
    let mut e = Endpoint::new(cfg, MemberId::new(1, 1), 1, 7, |_: &Delivery<'_>| true);
    if key {
        e.set_system_key(Some(&[5u8; 32]));
    }
    e.join(
        GROUP,
        GroupSpec {
            view: ViewId(1),
            members: vec![MemberId::new(1, 1), MemberId::new(2, 1)],
            multicast: true,
            key: None,
        },
    );
    e
}

fn sealed(keys: &Keys, kind: u8, frame_count: u8, body: &[u8], pn: u64) -> Vec<u8> {
    let mode = keys.mode_for(GROUP);
    let header = PacketHeader {
        magic: U32::new(MAGIC),
        version: VERSION,
        kind,
        flags: mode.flags(),
        frame_count,
        body_len: U16::new(body.len() as u16),
        fanout: U16::new(0),
        view_id: U32::new(1),
        group_id: U64::new(GROUP.0),
        sender: U64::new(MemberId::new(2, 1).0),
        packet_number: U64::new(pn),
    };
    let mut buf = vec![0u8; HEADER_LEN + body.len() + 16];
    buf[..HEADER_LEN].copy_from_slice(header.as_bytes());
    buf[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    let len = Sealer::seal(keys, mode, &mut buf, HEADER_LEN + body.len());
    buf.truncate(len);
    buf
}

fn from() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9))
}

/// After hostile input the endpoint still sends, transmits and accepts a valid message.
fn still_works(e: &mut Endpoint<impl FnMut(&Delivery<'_>) -> bool>, keys: &Keys, pn: u64) {
    let now = Timestamp::from_nanos(1_000_000_000);
    e.try_send(now, GROUP, b"still alive").expect("send works");
    let mut buf = vec![0u8; 1500];
    assert!(e.poll_transmit(now, &mut buf).is_some());
    e.handle_timeout(now);
    let _ = e.poll_timeout();
    // A valid MSG frame with a high sequence number is buffered or counted, never a panic.
    let mut body = vec![1u8, 0, 0, 13];
    body.extend_from_slice(&9u64.to_be_bytes());
    body.push(b'x');
    let mut d = sealed(keys, 1, 1, &body, pn);
    e.handle_datagram(now, from(), &mut d);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_dropped_and_counted(bytes in proptest::collection::vec(any::<u8>(), 0..1600), key: bool) {
        let mut e = endpoint(key);
        let mut d = bytes.clone();
        e.handle_datagram(Timestamp::ZERO, from(), &mut d);
        prop_assert_eq!(e.drops().total(), 1, "one datagram, exactly one drop reason");
    }

    #[test]
    fn arbitrary_bodies_in_sealed_datagrams_never_panic(
        bodies in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..600), 0u8..8, 1u8..3), 1..8),
        key: bool,
    ) {
        let mut e = endpoint(key);
        let mut keys = Keys::default();
        if key {
            keys.set_system_key(Some(&[5u8; 32]));
        }
        let mut pn = 1;
        for (body, frames, kind) in &bodies {
            let mut d = sealed(&keys, *kind, *frames, body, pn);
            pn += 1;
            e.handle_datagram(Timestamp::from_nanos(pn * 1000), from(), &mut d);
            e.poll_delivery();
        }
        still_works(&mut e, &keys, pn);
    }

    /// Structured frames with random fields: plausible-looking frames are the dangerous ones.
    #[test]
    fn random_well_formed_frames_never_panic(
        frames in proptest::collection::vec((1u8..9, any::<u8>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64)), 1..12),
    ) {
        let mut e = endpoint(false);
        let keys = Keys::default();
        let mut pn = 1;
        for (kind, flags, seq, a, b, c, payload) in &frames {
            let seq = seq % 64;
            let mut body = Vec::new();
            let content = frame_content(*kind, seq, *a, *b, *c, payload);
            body.push(*kind);
            body.push(flags & 1);
            body.extend_from_slice(&(content.len() as u16).to_be_bytes());
            body.extend_from_slice(&content);
            let packet_kind = if flags & 1 == 1 { 2 } else { 1 };
            let mut d = sealed(&keys, packet_kind, 1, &body, pn);
            pn += 1;
            let now = Timestamp::from_nanos(pn * 100_000);
            e.handle_datagram(now, from(), &mut d);
            e.handle_timeout(now);
            let mut buf = vec![0u8; 1500];
            while e.poll_transmit(now, &mut buf).is_some() {}
        }
        still_works(&mut e, &keys, pn);
    }

    /// Relay frames and requests with random fields at a wedged, flushing member of a
    /// three-member group (where relays are accepted): never a panic, every rejected frame
    /// counted, and the view change still completes afterwards.
    #[test]
    fn hostile_relays_during_a_flush_never_panic(
        frames in proptest::collection::vec((1u8..9, any::<u8>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()), 1..16),
        through in 0u64..40,
    ) {
        let members = vec![MemberId::new(1, 1), MemberId::new(2, 1), MemberId::new(3, 1)];
        let cfg = ProtocolConfig {
            max_message_bytes: 1 << 20,
            send_buffer_bytes: 1 << 20,
            ..ProtocolConfig::default()
        };
        let mut e = Endpoint::new(cfg, members[0], 1, 7, |_: &Delivery<'_>| true);
        e.join(GROUP, GroupSpec { view: ViewId(1), members: members.clone(), multicast: false, key: None });
        e.wedge(GROUP, ViewId(1)).unwrap();
        let cut: Vec<CutEntry> = members.iter().map(|m| CutEntry {
            sender: *m,
            through: if *m == members[2] { through } else { 0 },
            holder: members[1],
        }).collect();
        e.flush(GROUP, ViewId(1), &cut).unwrap();
        let keys = Keys::default();
        let mut pn = 1;
        for (kind, flags, seq, a, b, c, payload, direct) in &frames {
            let seq = seq % 64;
            let content = frame_content(*kind, seq, *a, *b, *c, payload);
            let mut body = vec![*kind, flags & 1];
            body.extend_from_slice(&(content.len() as u16).to_be_bytes());
            body.extend_from_slice(&content);
            let mut d = sealed(&keys, if *direct { 2 } else { 1 }, 1, &body, pn);
            pn += 1;
            let now = Timestamp::from_nanos(pn * 100_000);
            e.handle_datagram(now, from(), &mut d);
            e.handle_timeout(now);
            e.poll_delivery();
            let mut buf = vec![0u8; 1500];
            while e.poll_transmit(now, &mut buf).is_some() {}
        }
        prop_assert!(e.is_wedged(GROUP));
        // A correct cut of what it holds now still completes the view change.
        let r = e.wedge(GROUP, ViewId(1)).unwrap();
        let cut: Vec<CutEntry> = r.positions.iter().map(|(m, p)| CutEntry { sender: *m, through: *p, holder: members[0] }).collect();
        e.flush(GROUP, ViewId(1), &cut).unwrap();
        prop_assert!(e.flushed(GROUP));
        e.install(GROUP, GroupSpec { view: ViewId(2), members: members[..2].to_vec(), multicast: false, key: None }).unwrap();
        prop_assert!(e.try_send(Timestamp::from_nanos(1 << 40), GROUP, b"after").is_ok());
    }
}

/// The content of a frame of `kind` with plausible random fields.
fn frame_content(kind: u8, seq: u64, a: u32, b: u32, c: u32, payload: &[u8]) -> Vec<u8> {
    let mut content = Vec::new();
    match kind {
        1 | 3 => {
            content.extend_from_slice(&seq.to_be_bytes());
            content.extend_from_slice(payload);
        }
        2 => {
            content.extend_from_slice(&seq.to_be_bytes());
            content.extend_from_slice(&(a % 8).to_be_bytes());
            content.extend_from_slice(&(b % 8).to_be_bytes());
            content.extend_from_slice(&(c % 4096).to_be_bytes());
            content.extend_from_slice(payload);
        }
        4 => {
            for _ in 0..(1 + a % 3) {
                content.extend_from_slice(&MemberId::new(1, 1).0.to_be_bytes());
                content.extend_from_slice(&(seq + b as u64 % 8).to_be_bytes());
                content.extend_from_slice(&seq.to_be_bytes());
            }
        }
        5 => {
            content.extend_from_slice(&MemberId::new(1, 1).0.to_be_bytes());
            content.extend_from_slice(&seq.to_be_bytes());
            content.extend_from_slice(&(seq + 1 + (a as u64 % 100)).to_be_bytes());
        }
        6 => {
            content.extend_from_slice(&(seq + (a as u64 % 50)).to_be_bytes());
            content.extend_from_slice(&seq.to_be_bytes());
        }
        7 => {
            let origin = [
                MemberId::new(1, 1),
                MemberId::new(2, 1),
                MemberId::new(3, 1),
                MemberId::new(9, 1),
            ][(b % 4) as usize];
            content.extend_from_slice(&origin.0.to_be_bytes());
            content.extend_from_slice(&seq.to_be_bytes());
            content.extend_from_slice(&(seq + (a as u64 % 300)).to_be_bytes());
        }
        _ => {
            let origin = [
                MemberId::new(1, 1),
                MemberId::new(2, 1),
                MemberId::new(3, 1),
                MemberId::new(9, 1),
            ][(b % 4) as usize];
            content.extend_from_slice(&origin.0.to_be_bytes());
            content.extend_from_slice(&seq.to_be_bytes());
            let count = if c.is_multiple_of(2) { 1 } else { 2 + c % 4 };
            let index = if count == 1 {
                0
            } else {
                (a % count).min(seq.saturating_sub(1) as u32)
            };
            let total = if count == 1 {
                payload.len() as u32
            } else {
                (payload.len() as u32).max(count) + a % 64
            };
            content.extend_from_slice(&index.to_be_bytes());
            content.extend_from_slice(&count.to_be_bytes());
            content.extend_from_slice(&total.to_be_bytes());
            content.extend_from_slice(payload);
        }
    }
    content
}

#[test]
fn forged_and_replayed_packets_are_rejected() {
    let mut e = endpoint(true);
    let mut keys = Keys::default();
    keys.set_system_key(Some(&[5u8; 32]));
    let mut body = vec![1u8, 0, 0, 9];
    body.extend_from_slice(&1u64.to_be_bytes());
    body.push(b'a');
    let good = sealed(&keys, 1, 1, &body, 100);
    e.handle_datagram(Timestamp::ZERO, from(), &mut good.clone());
    assert_eq!(e.stats().messages_delivered, 1);
    // Replay of the same authenticated datagram.
    e.handle_datagram(Timestamp::ZERO, from(), &mut good.clone());
    assert_eq!(
        e.drops().get(vsync_dataplane::wire::DropReason::Replayed),
        1
    );
    // Forged: a bit flipped in the body.
    let mut forged = sealed(&keys, 1, 1, &body, 101);
    forged[HEADER_LEN + 12] ^= 1;
    e.handle_datagram(Timestamp::ZERO, from(), &mut forged);
    assert_eq!(
        e.drops().get(vsync_dataplane::wire::DropReason::AuthFailed),
        1
    );
    // Truncated.
    let mut truncated = sealed(&keys, 1, 1, &body, 102);
    truncated.truncate(truncated.len() - 3);
    e.handle_datagram(Timestamp::ZERO, from(), &mut truncated);
    assert_eq!(
        e.drops().get(vsync_dataplane::wire::DropReason::BadLength),
        1
    );
    // Unauthenticated (checksum mode) when a key is required.
    let plain = sealed(&Keys::default(), 1, 1, &body, 103);
    e.handle_datagram(Timestamp::ZERO, from(), &mut plain.clone());
    assert_eq!(
        e.drops()
            .get(vsync_dataplane::wire::DropReason::Unauthenticated),
        1
    );
    assert_eq!(e.stats().messages_delivered, 1);
    let _ = SealMode::Checksum;
}
