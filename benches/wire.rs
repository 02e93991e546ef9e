//! Criterion benches of the data plane's CPU costs: frame encode/decode, xxh3 checksums,
//! AES-256-GCM seal/open, and the sans-IO core end to end in memory (packing small messages
//! into datagrams, fragmenting and reassembling large ones) — no sockets involved.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vsync::dataplane::config::ProtocolConfig;
use vsync::dataplane::protocol::{Delivery, Endpoint, GroupSpec, Protocol};
use vsync::dataplane::wire::{Frame, FrameReader, Keys, PacketKind, PacketWriter, Sealer};
use vsync::dataplane::{GroupId, MemberId, Timestamp, ViewId};

const GROUP: GroupId = GroupId(1);

fn build_packet(keys: &Keys, msg_len: usize, buf: &mut [u8]) -> usize {
    let mode = keys.mode_for(GROUP);
    let mut w = PacketWriter::new(buf, 1472, mode.trailer_len());
    let payload = vec![7u8; msg_len];
    let mut seq = 1;
    while w.push_msg(false, false, seq, &payload) {
        seq += 1;
    }
    let len = w.finish(
        PacketKind::Group,
        ViewId(1),
        GROUP,
        MemberId::new(1, 1),
        42,
        mode.flags(),
    );
    Sealer::seal(keys, mode, buf, len)
}

fn wire(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for msg_len in [64usize, 1024] {
        let keys = Keys::default();
        let mut buf = vec![0u8; 1500];
        let len = build_packet(&keys, msg_len, &mut buf);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(
            BenchmarkId::new("encode_seal_checksum", msg_len),
            &msg_len,
            |b, &m| b.iter(|| build_packet(&keys, black_box(m), &mut buf)),
        );
        let packet = buf[..len].to_vec();
        g.bench_with_input(
            BenchmarkId::new("open_decode_checksum", msg_len),
            &msg_len,
            |b, _| {
                let mut d = packet.clone();
                b.iter(|| {
                    d.copy_from_slice(&packet);
                    let (h, body) = Sealer::open(&keys, &mut d).expect("valid");
                    let mut n = 0;
                    for f in FrameReader::new(&d[body], h.frame_count) {
                        if let Ok(Frame::Msg { payload, .. }) = f {
                            n += payload.len();
                        }
                    }
                    black_box(n)
                })
            },
        );
    }
    for (name, system, group) in [("authenticated", true, false), ("encrypted", false, true)] {
        let mut keys = Keys::default();
        if system {
            keys.set_system_key(Some(&[1u8; 32]));
        }
        if group {
            keys.set_group_key(GROUP, Some(&[2u8; 32]));
        }
        let mut buf = vec![0u8; 1500];
        let len = build_packet(&keys, 1024, &mut buf);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("encode_seal", name), |b| {
            b.iter(|| build_packet(&keys, 1024, &mut buf))
        });
        let packet = buf[..len].to_vec();
        g.bench_function(BenchmarkId::new("open", name), |b| {
            let mut d = packet.clone();
            b.iter(|| {
                d.copy_from_slice(&packet);
                black_box(Sealer::open(&keys, &mut d).expect("valid").1.len())
            })
        });
    }
    for size in [64usize, 1400, 65536] {
        let data = vec![3u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("xxh3", size), &data, |b, d| {
            b.iter(|| xxhash_rust::xxh3::xxh3_64(black_box(d)))
        });
    }
    g.finish();
}

/// Two endpoints wired back to back in memory: `messages` of `size` bytes from a to b.
fn transfer(size: usize, messages: usize, cfg: &ProtocolConfig) -> usize {
    let (ma, mb) = (MemberId::new(1, 1), MemberId::new(2, 1));
    let mut a = Endpoint::new(cfg.clone(), ma, 1, 1, |_: &Delivery<'_>| true);
    let mut delivered = 0usize;
    let mut b = Endpoint::new(cfg.clone(), mb, 1, 2, move |d: &Delivery<'_>| {
        black_box(d.payload.len());
        true
    });
    let spec = GroupSpec {
        view: ViewId(1),
        members: vec![ma, mb],
        multicast: true,
        key: None,
    };
    a.join(GROUP, spec.clone());
    b.join(GROUP, spec);
    let from = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
    let payload = vec![5u8; size];
    let mut buf = vec![0u8; cfg.mtu];
    let mut sent = 0;
    let mut now = Timestamp::ZERO;
    let before = b.stats().messages_delivered;
    while delivered < messages {
        now = now + Duration::from_micros(10);
        while sent < messages && a.try_send(now, GROUP, &payload).is_ok() {
            sent += 1;
        }
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            b.handle_datagram(now, from, &mut buf[..t.len]);
        }
        b.handle_timeout(now);
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            a.handle_datagram(now, from, &mut buf[..t.len]);
        }
        a.handle_timeout(now);
        delivered = (b.stats().messages_delivered - before) as usize;
    }
    delivered
}

fn core(c: &mut Criterion) {
    let mut g = c.benchmark_group("core_in_memory");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    let cfg = ProtocolConfig::default();
    for (size, n) in [(64usize, 20_000usize), (1024, 10_000), (8192, 2_000)] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("pack_send_deliver", size),
            &size,
            |b, &s| b.iter(|| transfer(s, n, &cfg)),
        );
    }
    g.throughput(Throughput::Bytes(4 << 20));
    g.bench_function("fragment_reassemble_1MiB", |b| {
        b.iter(|| transfer(1 << 20, 4, &cfg))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().configure_from_args();
    targets = wire, core
}
criterion_main!(benches);
