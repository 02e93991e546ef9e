//! Review harness: N real `Endpoint`s wired together in memory with a manual clock, a fixed
//! one-way delay and a per-datagram drop filter that sees the decoded frames. Included by the
//! other `review_*.rs` files with `#[path = "review_harness.rs"] mod harness;`. Its own test
//! only checks that the harness delivers on a clean network.

#![allow(dead_code, clippy::type_complexity, clippy::too_many_arguments)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::{
    Delivery, DeliveryKind, DeliverySink, Destination, Endpoint, GroupSpec, Protocol,
};
use vsync_dataplane::wire::{
    AckEntry, Frame, FrameReader, Keys, NakRange, PacketKind, PacketWriter, SealMode, Sealer,
    HEADER_LEN,
};
use vsync_dataplane::{GroupId, MemberId, Timestamp, ViewId};

pub const G: GroupId = GroupId(77);

pub fn id(i: usize) -> MemberId {
    MemberId::new(i as u32 + 1, 1)
}

pub fn from() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub at: Timestamp,
    pub sender: MemberId,
    pub kind: DeliveryKind,
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Records every delivery with the virtual time; refuses while `accept` is false.
#[derive(Debug)]
pub struct Sink {
    pub log: Vec<Rec>,
    pub accept: bool,
    pub now: Timestamp,
    pub refusals: u64,
}

impl Default for Sink {
    fn default() -> Self {
        Sink {
            log: Vec::new(),
            accept: true,
            now: Timestamp::ZERO,
            refusals: 0,
        }
    }
}

impl DeliverySink for Sink {
    fn deliver(&mut self, d: &Delivery<'_>) -> bool {
        if !self.accept {
            self.refusals += 1;
            return false;
        }
        self.log.push(Rec {
            at: self.now,
            sender: d.sender,
            kind: d.kind,
            seq: d.seq,
            payload: d.payload.to_vec(),
        });
        true
    }
}

/// An owned summary of one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum F {
    Data {
        p2p: bool,
        seq: u64,
        index: u32,
        count: u32,
        len: usize,
    },
    Raw {
        p2p: bool,
        seq: u64,
    },
    Ack {
        p2p: bool,
        entries: Vec<AckEntry>,
    },
    Nak {
        p2p: bool,
        target: MemberId,
        ranges: Vec<NakRange>,
    },
    High {
        p2p: bool,
        next_seq: u64,
        floor: u64,
    },
    RelayReq {
        origin: MemberId,
        from: u64,
        to: u64,
    },
    Relay {
        origin: MemberId,
        seq: u64,
        len: usize,
    },
}

/// Decodes the frames of an unencrypted datagram (checksum or authenticated mode).
pub fn frames(bytes: &[u8], trailer: usize) -> Vec<F> {
    let count = bytes[7];
    let body = &bytes[HEADER_LEN..bytes.len() - trailer];
    FrameReader::new(body, count)
        .filter_map(|f| f.ok())
        .map(|f| match f {
            Frame::Msg { p2p, seq, payload } => F::Data {
                p2p,
                seq,
                index: 0,
                count: 1,
                len: payload.len(),
            },
            Frame::Frag {
                p2p,
                seq,
                index,
                count,
                payload,
                ..
            } => F::Data {
                p2p,
                seq,
                index,
                count,
                len: payload.len(),
            },
            Frame::Raw { p2p, seq, .. } => F::Raw { p2p, seq },
            Frame::Ack { p2p, entries } => F::Ack {
                p2p,
                entries: entries.collect(),
            },
            Frame::Nak {
                p2p,
                target,
                ranges,
            } => F::Nak {
                p2p,
                target,
                ranges: ranges.collect(),
            },
            Frame::High {
                p2p,
                next_seq,
                floor,
            } => F::High {
                p2p,
                next_seq,
                floor,
            },
            Frame::RelayReq { origin, from, to } => F::RelayReq { origin, from, to },
            Frame::Relay {
                origin,
                seq,
                payload,
                ..
            } => F::Relay {
                origin,
                seq,
                len: payload.len(),
            },
        })
        .collect()
}

/// What the drop filter sees.
pub struct Pkt<'a> {
    pub now: Timestamp,
    pub from: usize,
    pub to: usize,
    pub destination: Destination,
    pub frames: &'a [F],
}

pub type Filter = Box<dyn FnMut(&Pkt<'_>) -> bool>;

pub struct Net {
    pub nodes: Vec<Endpoint<Sink>>,
    pub ids: Vec<MemberId>,
    pub now: Timestamp,
    pub delay: Duration,
    pub tick: Duration,
    /// (arrival, order, to, bytes), earliest first.
    pub queue: BinaryHeap<Reverse<(Timestamp, u64, usize, Vec<u8>)>>,
    order: u64,
    pub datagrams: u64,
    /// Datagrams by sender index.
    pub sent_by: Vec<u64>,
    /// Every transmitted datagram: (time, from, destination, frames).
    pub trace: Vec<(Timestamp, usize, Destination, Vec<F>)>,
    pub keep_trace: bool,
    /// Returns true to DROP the copy.
    pub filter: Filter,
    pub trailer: usize,
    pub timeouts_fired: u64,
    /// Call poll_delivery every step (what the node and the simulator do).
    pub poll_delivery: bool,
}

impl Net {
    pub fn new(n: usize, cfg: ProtocolConfig, multicast: bool) -> Net {
        let ids: Vec<MemberId> = (0..n).map(id).collect();
        Self::with_members(ids.clone(), ids, cfg, multicast)
    }

    /// Endpoints for `local` (each joins a group whose member list is `members`).
    pub fn with_members(
        local: Vec<MemberId>,
        members: Vec<MemberId>,
        cfg: ProtocolConfig,
        multicast: bool,
    ) -> Net {
        let nodes = local
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut e = Endpoint::new(
                    cfg.clone(),
                    *m,
                    1000 + 100_000 * i as u64,
                    42 + i as u64,
                    Sink::default(),
                );
                e.join(
                    G,
                    GroupSpec {
                        view: ViewId(1),
                        members: members.clone(),
                        multicast,
                        key: None,
                    },
                );
                e
            })
            .collect::<Vec<_>>();
        let n = nodes.len();
        Net {
            nodes,
            ids: local,
            now: Timestamp::ZERO,
            delay: Duration::from_micros(50),
            tick: Duration::from_micros(10),
            queue: BinaryHeap::new(),
            order: 0,
            datagrams: 0,
            sent_by: vec![0; n],
            trace: Vec::new(),
            keep_trace: false,
            filter: Box::new(|_| false),
            trailer: 8,
            timeouts_fired: 0,
            poll_delivery: true,
        }
    }

    pub fn index_of(&self, m: MemberId) -> Option<usize> {
        self.ids.iter().position(|x| *x == m)
    }

    /// Injects raw bytes to node `to`, arriving after the delay.
    pub fn inject(&mut self, to: usize, bytes: Vec<u8>) {
        self.order += 1;
        self.queue
            .push(Reverse((self.now + self.delay, self.order, to, bytes)));
    }

    /// One driver iteration at the current time: deliver due datagrams, timers, transmit,
    /// retry deliveries. Then advance the clock by `tick`.
    pub fn step(&mut self) {
        let now = self.now;
        for n in self.nodes.iter_mut() {
            n.sink_mut().now = now;
        }
        // Network.
        while self
            .queue
            .peek()
            .is_some_and(|Reverse((at, _, _, _))| *at <= now)
        {
            let Reverse((_, _, to, mut bytes)) = self.queue.pop().expect("peeked");
            self.nodes[to].handle_datagram(now, from(), &mut bytes);
        }
        // Timers.
        for n in self.nodes.iter_mut() {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
                self.timeouts_fired += 1;
            }
        }
        // Transmit.
        let mtu = self.nodes[0].config().mtu;
        let mut buf = vec![0u8; mtu];
        for i in 0..self.nodes.len() {
            let mut guard = 0;
            while let Some(t) = self.nodes[i].poll_transmit(now, &mut buf) {
                guard += 1;
                assert!(guard < 100_000, "poll_transmit never returns None");
                self.datagrams += 1;
                self.sent_by[i] += 1;
                let bytes = buf[..t.len].to_vec();
                let fr = frames(&bytes, self.trailer);
                if self.keep_trace {
                    self.trace.push((now, i, t.destination, fr.clone()));
                }
                let targets: Vec<usize> = match t.destination {
                    Destination::Group(_) => (0..self.nodes.len()).filter(|x| *x != i).collect(),
                    Destination::Member(m) => self.index_of(m).into_iter().collect(),
                };
                for to in targets {
                    let p = Pkt {
                        now,
                        from: i,
                        to,
                        destination: t.destination,
                        frames: &fr,
                    };
                    if (self.filter)(&p) {
                        continue;
                    }
                    self.order += 1;
                    self.queue
                        .push(Reverse((now + self.delay, self.order, to, bytes.clone())));
                }
            }
        }
        if self.poll_delivery {
            for n in self.nodes.iter_mut() {
                n.poll_delivery();
            }
        }
        self.now = self.now + self.tick;
    }

    /// Steps until `done` or `limit` of virtual time passed; true if `done`.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Deliveries of `kind` from `sender` at node `at`.
    pub fn delivered(&self, at: usize, sender: MemberId, kind: DeliveryKind) -> Vec<&Rec> {
        self.nodes[at]
            .sink()
            .log
            .iter()
            .filter(|r| r.sender == sender && r.kind == kind)
            .collect()
    }
}

/// Builds one sealed datagram from `sender` for group `group` with the given frames written by
/// `write` (a buggy or malicious member that holds the keys, or anyone in checksum mode).
pub fn forge(
    keys: &Keys,
    kind: PacketKind,
    group: GroupId,
    view: ViewId,
    sender: MemberId,
    pn: u64,
    mtu: usize,
    write: impl FnOnce(&mut PacketWriter<'_>),
) -> Vec<u8> {
    let mode: SealMode = keys.mode_for(group);
    let mut buf = vec![0u8; mtu];
    let mut w = PacketWriter::new(&mut buf, mtu, mode.trailer_len());
    write(&mut w);
    let len = w.finish(kind, view, group, sender, pn, mode.flags());
    let len = Sealer::seal(keys, mode, &mut buf, len);
    buf.truncate(len);
    buf
}

#[test]
fn harness_delivers_on_a_clean_network() {
    let mut net = Net::new(3, ProtocolConfig::default(), true);
    for i in 0..10u8 {
        net.nodes[0].try_send(net.now, G, &[i; 100]).unwrap();
    }
    let ok = net.run_until(Duration::from_millis(50), |n| {
        (1..3).all(|r| n.delivered(r, id(0), DeliveryKind::Send).len() == 10)
            && n.nodes[0].all_stable(G)
    });
    assert!(ok);
}
