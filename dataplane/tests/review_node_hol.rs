//! Review: head-of-line blocking in a node's per-group submit ring. Send, P2PSend (to any
//! peer), RawSend and RawP2PSend of one group share one FIFO submit ring, and the engine stops
//! draining it at the first record the endpoint refuses with WouldBlock. A P2P stream to one
//! slow member therefore blocks raw sends, P2P sends to other members and group sends that
//! the protocol would accept at once.
//!
//! Real sockets on 127.0.0.1 only (unicast fan-out, no multicast), portable backend,
//! three `EmbeddedNode`s polled from the test thread.
//!
//! Run the proof with:
//! `cargo test -p vsync-dataplane --test review_node_hol -- --ignored --nocapture`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::engine::{BackendChoice, EngineConfig};
use vsync_dataplane::node::{EmbeddedNode, GroupConfig, NodeConfig, SendError};
use vsync_dataplane::protocol::DeliveryKind;
use vsync_dataplane::{GroupId, MemberId, ViewId};

const MAX: usize = 64 << 10;

fn cfg(i: u32) -> NodeConfig {
    NodeConfig {
        protocol: ProtocolConfig {
            max_message_bytes: MAX,
            send_buffer_bytes: MAX,
            window_bytes: 65536,
            window_frames: 64,
            ..ProtocolConfig::default()
        },
        engine: EngineConfig {
            backend: BackendChoice::Portable,
            ..EngineConfig::default()
        },
        ring_bytes: NodeConfig::min_ring_bytes(MAX),
        ..NodeConfig::new(MemberId::new(i, 1))
    }
}

#[test]
#[ignore = "BUG: one slow P2P destination blocks every other send of the group (shared FIFO submit ring)"]
fn p2p_to_a_slow_member_blocks_raw_and_group_sends_to_others() {
    let mut nodes: Vec<EmbeddedNode> = (1..=3)
        .map(|i| EmbeddedNode::new(cfg(i)).expect("node"))
        .collect();
    let ids: Vec<MemberId> = (1..=3).map(|i| MemberId::new(i, 1)).collect();
    let members: Vec<(MemberId, SocketAddr)> = nodes
        .iter()
        .zip(&ids)
        .map(|(n, m)| (*m, SocketAddr::V4(n.local_addr())))
        .collect();
    let group = GroupId(0xB10C_0000 + std::process::id() as u64);
    let gc = GroupConfig {
        group,
        view: ViewId(1),
        members,
        multicast: None,
        key: None,
        rate_limit: None,
    };
    let mut handles: Vec<_> = nodes
        .iter_mut()
        .map(|n| n.join(gc.clone()).expect("join"))
        .collect();
    let poll_all = |nodes: &mut Vec<EmbeddedNode>| {
        for n in nodes.iter_mut() {
            n.poll(Duration::ZERO).expect("poll");
        }
    };
    // A (0) floods P2P to B (1), whose application never reads.
    let msg = vec![1u8; 1000];
    let mut sent = 0;
    let start = Instant::now();
    while sent < 400 && start.elapsed() < Duration::from_secs(5) {
        match handles[0].try_send_p2p(ids[1], &msg) {
            Ok(()) => sent += 1,
            Err(SendError::WouldBlock) => poll_all(&mut nodes),
            Err(e) => panic!("{e}"),
        }
    }
    for _ in 0..200 {
        poll_all(&mut nodes);
    }
    // Now a raw P2P message and a group multicast, both to be received by C (2).
    handles[0]
        .try_send_raw(Some(ids[2]), b"raw for C")
        .expect("room in the submit ring");
    handles[0]
        .try_send(b"multicast")
        .expect("room in the submit ring");
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        poll_all(&mut nodes);
        while let Some(m) = handles[2].try_recv() {
            got.push((m.kind, m.payload().to_vec()));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let a = nodes[0].stats();
    let g = a.group(group).unwrap();
    println!(
        "A: p2p sent {sent}; submit_would_block={} submit_pending_bytes={} p2p_retained={:?}",
        g.submit_would_block,
        g.submit_pending_bytes,
        g.protocol.as_ref().map(|p| p.p2p_retained_bytes)
    );
    println!("C received within 1 s: {got:?}");
    assert!(
        got.iter().any(|(k, _)| *k == DeliveryKind::Send)
            && got.iter().any(|(k, _)| *k == DeliveryKind::RawP2p),
        "C got neither the multicast nor the raw message: stuck behind A's P2P stream to B"
    );
}
