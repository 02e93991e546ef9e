//! The reliable transport: one vsync data-plane member ([`EmbeddedNode`]) per benchmark
//! member, driven by the member's own thread (the cooperative duty cycle recommended on small
//! machines, and the same thread budget the raw baseline gets).
//!
//! Member `i` is `MemberId::new(i + 1, 1)`, bound to `members[i]`; the group is the benchmark's
//! multicast group, or unicast fan-out with `--unicast`. Protocol and engine settings come from
//! the `VSYNC_*` environment (so `VSYNC_ENGINE=portable` benchmarks the portable backend), with
//! the benchmark's addresses, interface, socket buffer and batch applied on top. `--loss`
//! becomes the engine's receive-side loss injection. `VSYNC_AUDIT_LOG=/dir/audit-{index}.jsonl`
//! writes one delivery audit log per member.
//!
//! Counters: the endpoint's (`naks_sent`, `frames_retransmitted`, …), every non-zero drop
//! reason as `drop_<reason>`, and the engine's (`gso_batches`, `gro_batches`, syscalls, …).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use vsync_dataplane::node::{EmbeddedNode, GroupConfig, GroupHandle, NodeConfig, SendError};
use vsync_dataplane::{GroupId, MemberId, ViewId};

use crate::transport::{BenchTransport, SendOutcome, TransportConfig};

/// The benchmark's group id.
const BENCH_GROUP: GroupId = GroupId(0xBE7C);

/// A vsync member as a benchmark transport.
pub struct ReliableTransport {
    node: EmbeddedNode,
    handle: GroupHandle,
    me: MemberId,
}

fn member_id(index: usize) -> MemberId {
    MemberId::new(index as u32 + 1, 1)
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl ReliableTransport {
    /// Starts member `cfg.index` and joins the benchmark group.
    pub fn open(cfg: &TransportConfig) -> io::Result<ReliableTransport> {
        let index = cfg.index as usize;
        let me = member_id(index);
        let bind = *cfg.members.get(index).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("member index {index} out of range"),
            )
        })?;
        let mut node_cfg = NodeConfig::from_env(me)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        node_cfg.engine.unicast_bind = bind;
        node_cfg.engine.multicast_interface = cfg.iface;
        node_cfg.engine.multicast_loop = cfg.multicast_loop;
        node_cfg.engine.socket_buffer_bytes = cfg.socket_buffer;
        node_cfg.engine.batch = cfg.batch.clamp(1, 1024);
        node_cfg.engine.rx_loss = (cfg.rx_loss_pct / 100.0).clamp(0.0, 1.0);
        // The benchmark never sends more than --size; keep memory proportionate.
        let max = cfg.max_payload.max(64 << 10);
        if node_cfg.protocol.max_message_bytes > max
            && std::env::var_os("VSYNC_MAXMSGLEN").is_none()
        {
            node_cfg.protocol.max_message_bytes = max;
        }
        if std::env::var_os("VSYNC_RING_BYTES").is_none() {
            node_cfg.ring_bytes =
                NodeConfig::min_ring_bytes(node_cfg.protocol.max_message_bytes).max(16 << 20);
        }
        node_cfg.seed = cfg.seed ^ index as u64;
        // One audit log per member: `{index}` in VSYNC_AUDIT_LOG becomes the member index.
        if let Some(path) = &node_cfg.audit_log {
            let text = path.to_string_lossy();
            if text.contains("{index}") {
                node_cfg.audit_log = Some(text.replace("{index}", &index.to_string()).into());
            }
        }
        let mut node = EmbeddedNode::new(node_cfg).map_err(other)?;
        let members = cfg
            .members
            .iter()
            .enumerate()
            .map(|(i, a)| (member_id(i), SocketAddr::V4(*a)))
            .collect();
        let handle = node
            .join(GroupConfig {
                group: BENCH_GROUP,
                view: ViewId(1),
                members,
                multicast: (!cfg.unicast).then_some(cfg.group),
                key: None,
                rate_limit: None,
            })
            .map_err(other)?;
        Ok(ReliableTransport { node, handle, me })
    }
}

impl BenchTransport for ReliableTransport {
    fn try_send(&mut self, payload: &[u8]) -> io::Result<SendOutcome> {
        match self.handle.try_send(payload) {
            Ok(()) => Ok(SendOutcome::Sent),
            Err(SendError::WouldBlock) => {
                // Give the engine a turn so the ring drains and the window can open.
                self.node.poll(Duration::ZERO).map_err(other)?;
                Ok(SendOutcome::WouldBlock)
            }
            Err(e) => Err(other(e)),
        }
    }

    fn flush(&mut self) -> io::Result<SendOutcome> {
        self.node.poll(Duration::ZERO).map_err(other)?;
        Ok(SendOutcome::Sent)
    }

    fn poll(&mut self, on_delivery: &mut dyn FnMut(u32, &[u8])) -> io::Result<usize> {
        self.node.poll(Duration::ZERO).map_err(other)?;
        let me = self.me;
        let mut n = 0;
        self.handle.recv_batch(4096, |m| {
            // Self-delivery is part of Isis² semantics; the harness counts peers' messages.
            if m.sender != me {
                on_delivery(m.sender.process().saturating_sub(1), m.payload);
                n += 1;
            }
        });
        Ok(n)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.node.poll(timeout).map(|_| ()).map_err(other)
    }

    fn pending(&self) -> usize {
        let stats = self.node.stats();
        match stats.group(BENCH_GROUP) {
            Some(g) if !g.all_stable => 1,
            _ => 0,
        }
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        let s = self.node.stats();
        let mut c = BTreeMap::new();
        let e = &s.endpoint;
        for (k, v) in [
            ("datagrams_sent", e.datagrams_sent),
            ("datagrams_received", e.datagrams_received),
            ("frames_sent", e.frames_sent),
            ("frames_retransmitted", e.frames_retransmitted),
            ("naks_sent", e.naks_sent),
            ("naks_received", e.naks_received),
            ("acks_sent", e.acks_sent),
            ("heartbeats_sent", e.heartbeats_sent),
            ("duplicates", e.duplicates),
            ("would_block", e.would_block),
        ] {
            c.insert(k.to_string(), v);
        }
        for (name, v) in &s.drops {
            if *v > 0 {
                c.insert(format!("drop_{name}"), *v);
            }
        }
        let g = &s.engine;
        for (k, v) in [
            ("send_syscalls", g.send_syscalls),
            ("recv_syscalls", g.recv_syscalls),
            ("gso_batches", g.gso_batches),
            ("gro_batches", g.gro_batches),
            ("send_errors", g.send_errors),
            ("injected_drops", g.injected_drops),
            ("truncated", g.truncated),
        ] {
            c.insert(k.to_string(), v);
        }
        c
    }
}
