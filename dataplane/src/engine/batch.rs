//! The transmit batch both backends share: the preallocated `batch × mtu` arena the protocol
//! writes into, destination resolution, GSO coalescing into send operations, the `msghdr` /
//! `iovec` / `sockaddr` / `cmsg` slots those operations point at, and the bookkeeping of send
//! results (success, keep-for-later on a full socket buffer, GSO fallback, drop on error).
//!
//! The receive-side helper [`deliver`] (GRO splitting and receive counters) lives here too so
//! that neither backend owns logic the other needs.

use std::net::{SocketAddr, SocketAddrV4};

use super::address_book::AddressBook;
use super::socket::{sockaddr_in, GsoCmsg, MAX_GSO_SEGMENTS, MAX_UDP_PAYLOAD};
use super::stats::EngineStats;
use crate::protocol::{Destination, Protocol};
use crate::Timestamp;

/// A send result slot that no backend attempted (kept for the next cycle, like `EAGAIN`).
pub(crate) const NOT_ATTEMPTED: i32 = i32::MIN;

/// One send system operation: `count` consecutive datagrams of the batch to one address,
/// as a single `UDP_SEGMENT` train when `segment > 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SendOp {
    pub addr: SocketAddrV4,
    pub first: u32,
    pub count: u32,
    /// GSO segment size; 0 for a plain single-datagram send.
    pub segment: u32,
    pub bytes: u64,
}

/// Preallocated transmit state; see the module docs.
pub(crate) struct TxBatch {
    mtu: usize,
    capacity: usize,
    arena: Box<[u8]>,
    lens: Vec<u32>,
    dests: Vec<Destination>,
    iovecs: Box<[libc::iovec]>,
    /// Operations still to send: planned this cycle, or kept from an earlier one.
    pub ops: Vec<SendOp>,
    /// Per-op result written by the backend: bytes sent, or `-errno`, or [`NOT_ATTEMPTED`].
    pub results: Vec<i32>,
    msgs: Vec<libc::mmsghdr>,
    names: Vec<libc::sockaddr_in>,
    cmsgs: Vec<GsoCmsg>,
    targets: Vec<SocketAddrV4>,
    retry: Vec<SendOp>,
    gso: bool,
}

impl TxBatch {
    /// A batch of `capacity` datagrams of at most `mtu` bytes.
    pub fn new(capacity: usize, mtu: usize, gso: bool) -> Self {
        let ops = capacity * 2;
        TxBatch {
            mtu,
            capacity,
            arena: vec![0u8; capacity * mtu].into_boxed_slice(),
            lens: Vec::with_capacity(capacity),
            dests: Vec::with_capacity(capacity),
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                capacity
            ]
            .into_boxed_slice(),
            ops: Vec::with_capacity(ops),
            results: Vec::with_capacity(ops),
            msgs: Vec::with_capacity(ops),
            names: Vec::with_capacity(ops),
            cmsgs: Vec::with_capacity(ops),
            targets: Vec::with_capacity(8),
            retry: Vec::with_capacity(ops),
            gso,
        }
    }

    /// Whether GSO coalescing is on.
    #[cfg(test)]
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Whether sends from an earlier cycle are still waiting (the arena is then locked).
    pub fn is_pending(&self) -> bool {
        !self.ops.is_empty()
    }

    /// Drains up to `capacity` datagrams from the protocol into the arena (no allocation) and
    /// plans their sends. Does nothing while earlier sends are pending. Returns how many
    /// datagrams the protocol produced.
    pub fn fill<P: Protocol>(
        &mut self,
        protocol: &mut P,
        now: Timestamp,
        book: &AddressBook,
        stats: &mut EngineStats,
    ) -> usize {
        if self.is_pending() {
            return 0;
        }
        self.lens.clear();
        self.dests.clear();
        let mut produced = 0;
        while self.lens.len() < self.capacity {
            let slot = self.lens.len();
            let buf = &mut self.arena[slot * self.mtu..(slot + 1) * self.mtu];
            let Some(transmit) = protocol.poll_transmit(now, buf) else {
                break;
            };
            produced += 1;
            if transmit.len > self.mtu {
                stats.send_errors += 1;
                continue;
            }
            self.lens.push(transmit.len as u32);
            self.dests.push(transmit.destination);
        }
        self.plan(book, stats);
        produced
    }

    /// Turns the datagrams into send operations: runs of one destination are resolved once,
    /// then each target gets the run split into GSO trains (equal-length segments, optionally
    /// ending with one shorter segment; at most [`MAX_GSO_SEGMENTS`] and 64 KiB per train).
    fn plan(&mut self, book: &AddressBook, stats: &mut EngineStats) {
        self.ops.clear();
        let count = self.lens.len();
        let mut start = 0;
        while start < count {
            let destination = self.dests[start];
            let mut end = start + 1;
            while end < count && self.dests[end] == destination {
                end += 1;
            }
            self.targets.clear();
            let missing = book.resolve(destination, &mut self.targets);
            stats.no_route += missing * (end - start) as u64;
            for t in 0..self.targets.len() {
                let addr = self.targets[t];
                let mut k = start;
                while k < end {
                    let segment = self.lens[k] as usize;
                    let mut n = 1;
                    let mut bytes = segment;
                    if self.gso && segment > 0 {
                        let max = MAX_GSO_SEGMENTS.min(MAX_UDP_PAYLOAD / segment);
                        while k + n < end && n < max {
                            let len = self.lens[k + n] as usize;
                            if len > segment || len == 0 {
                                break;
                            }
                            n += 1;
                            bytes += len;
                            if len < segment {
                                break;
                            }
                        }
                    }
                    self.ops.push(SendOp {
                        addr,
                        first: k as u32,
                        count: n as u32,
                        segment: if n > 1 { segment as u32 } else { 0 },
                        bytes: bytes as u64,
                    });
                    k += n;
                }
            }
            start = end;
        }
    }

    /// Builds one `msghdr` per pending op (in `mmsghdr` slots, usable by `sendmmsg` and as
    /// `SendMsg` SQE arguments) and resets the results. The pointers stay valid until the next
    /// call to any `&mut self` method other than the result bookkeeping; backends must finish
    /// every send before calling [`TxBatch::complete`].
    pub fn prepare(&mut self) {
        let n = self.ops.len();
        // SAFETY: mmsghdr is a plain C struct; all-zero (null pointers, zero lengths) is valid.
        let zero: libc::mmsghdr = unsafe { std::mem::zeroed() };
        self.msgs.clear();
        self.msgs.resize(n, zero);
        self.names.clear();
        self.names
            .resize(n, sockaddr_in(SocketAddrV4::new([0, 0, 0, 0].into(), 0)));
        self.cmsgs.clear();
        self.cmsgs.resize(n, GsoCmsg::new());
        self.results.clear();
        self.results.resize(n, NOT_ATTEMPTED);
        let arena = self.arena.as_mut_ptr();
        for (i, len) in self.lens.iter().enumerate() {
            // SAFETY: i < capacity, so i * mtu is inside the arena allocation.
            self.iovecs[i].iov_base = unsafe { arena.add(i * self.mtu) }.cast();
            self.iovecs[i].iov_len = *len as usize;
        }
        let iovecs = self.iovecs.as_mut_ptr();
        for k in 0..n {
            let op = self.ops[k];
            self.names[k] = sockaddr_in(op.addr);
            let hdr = &mut self.msgs[k].msg_hdr;
            hdr.msg_name = (&mut self.names[k] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: first + count <= number of datagrams <= capacity (plan builds ops only
            // from existing datagrams), so the iovec range is inside the iovec array.
            hdr.msg_iov = unsafe { iovecs.add(op.first as usize) };
            hdr.msg_iovlen = op.count as _;
            if op.segment > 0 {
                self.cmsgs[k].set_segment(op.segment as u16);
                hdr.msg_control = (&mut self.cmsgs[k] as *mut GsoCmsg).cast();
                hdr.msg_controllen = GsoCmsg::SPACE as _;
            }
        }
    }

    /// The `mmsghdr` array built by [`TxBatch::prepare`] (for `sendmmsg`).
    pub fn mmsgs_mut(&mut self) -> &mut [libc::mmsghdr] {
        &mut self.msgs
    }

    /// A pointer to op `k`'s `msghdr` (for a `SendMsg` SQE). Valid as documented on
    /// [`TxBatch::prepare`].
    pub fn msghdr_ptr(&self, k: usize) -> *const libc::msghdr {
        &self.msgs[k].msg_hdr
    }

    /// Accounts the results of a send round. Successful ops are counted and forgotten; ops
    /// that hit a full socket buffer (`EAGAIN`, `ENOBUFS`) or were not attempted stay pending
    /// for a later cycle; a GSO op that failed with `EIO`/`EINVAL` turns GSO off and is split
    /// into plain sends; other failures are counted and dropped. Returns `true` when split
    /// ops should be sent again right away.
    pub fn complete(&mut self, stats: &mut EngineStats) -> bool {
        self.retry.clear();
        let mut resend = false;
        let mut retained = false;
        for k in 0..self.ops.len() {
            let op = self.ops[k];
            let result = self.results.get(k).copied().unwrap_or(NOT_ATTEMPTED);
            if result >= 0 {
                stats.datagrams_sent += op.count as u64;
                stats.bytes_sent += op.bytes;
                if op.count > 1 {
                    stats.gso_batches += 1;
                }
                continue;
            }
            let errno = if result == NOT_ATTEMPTED {
                libc::EAGAIN
            } else {
                -result
            };
            match errno {
                libc::EAGAIN | libc::ENOBUFS | libc::EINTR => {
                    retained = true;
                    self.retry.push(op);
                }
                libc::EIO | libc::EINVAL if op.segment > 0 => {
                    if self.gso {
                        self.gso = false;
                        stats.gso_enabled = false;
                        stats.gso_fallbacks += 1;
                    }
                    resend = true;
                    for i in op.first..op.first + op.count {
                        let bytes = self.lens[i as usize] as u64;
                        let single = SendOp {
                            addr: op.addr,
                            first: i,
                            count: 1,
                            segment: 0,
                            bytes,
                        };
                        self.retry.push(single);
                    }
                }
                _ => stats.send_errors += op.count as u64,
            }
        }
        if retained {
            stats.send_retries += 1;
        }
        std::mem::swap(&mut self.ops, &mut self.retry);
        resend
    }
}

/// Feeds one received buffer to `sink`, split into its GRO segments when `segment` says the
/// kernel coalesced several datagrams, and counts them. Returns the number of datagrams.
pub(crate) fn deliver<F>(
    payload: &mut [u8],
    from: SocketAddr,
    segment: Option<usize>,
    stats: &mut EngineStats,
    sink: &mut F,
) -> usize
where
    F: FnMut(SocketAddr, &mut [u8]),
{
    stats.bytes_received += payload.len() as u64;
    match segment {
        Some(size) if size > 0 && payload.len() > size => {
            stats.gro_batches += 1;
            let mut n = 0;
            for datagram in payload.chunks_mut(size) {
                sink(from, datagram);
                n += 1;
            }
            stats.datagrams_received += n as u64;
            n
        }
        _ => {
            sink(from, payload);
            stats.datagrams_received += 1;
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Transmit;
    use crate::{GroupId, MemberId};
    use std::net::Ipv4Addr;

    struct Script(Vec<(Destination, usize)>);

    impl Protocol for Script {
        fn handle_datagram(&mut self, _: Timestamp, _: SocketAddr, _: &mut [u8]) {}
        fn poll_transmit(&mut self, _: Timestamp, buf: &mut [u8]) -> Option<Transmit> {
            if self.0.is_empty() {
                return None;
            }
            let (destination, len) = self.0.remove(0);
            let n = len.min(buf.len());
            buf[..n].fill(len as u8);
            Some(Transmit { destination, len })
        }
        fn poll_timeout(&self) -> Option<Timestamp> {
            None
        }
        fn handle_timeout(&mut self, _: Timestamp) {}
    }

    fn addr(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    #[test]
    fn coalesces_runs_and_fans_out() {
        let mut book = AddressBook::new();
        let (a, b, me) = (MemberId(1), MemberId(2), MemberId(9));
        book.set_local(me);
        book.set_member(a, addr(1).into());
        book.set_member(b, addr(2).into());
        book.set_group_unicast(GroupId(5), vec![a, b, me]);
        let to_a = Destination::Member(a);
        let group = Destination::Group(GroupId(5));
        let mut script = vec![(to_a, 100); 5];
        script.push((to_a, 40)); // shorter tail joins the train
        script.push((to_a, 100)); // new train
        script.extend([(group, 50), (group, 50)]);
        script.push((Destination::Member(MemberId(77)), 10)); // no route
        script.push((to_a, 2000)); // longer than mtu: error
        let mut protocol = Script(script);
        let mut stats = EngineStats::default();
        let mut tx = TxBatch::new(64, 1472, true);
        let produced = tx.fill(&mut protocol, Timestamp::ZERO, &book, &mut stats);
        assert_eq!(produced, 11);
        assert_eq!(stats.send_errors, 1);
        assert_eq!(stats.no_route, 1);
        let shape: Vec<_> = tx
            .ops
            .iter()
            .map(|o| (o.addr.port(), o.first, o.count, o.segment))
            .collect();
        assert_eq!(
            shape,
            vec![(1, 0, 6, 100), (1, 6, 1, 0), (1, 7, 2, 50), (2, 7, 2, 50)]
        );
        tx.prepare();
        // Pretend: first op hits EIO (GSO unsupported), second EAGAIN, the rest succeed.
        tx.results = vec![-libc::EIO, -libc::EAGAIN, 100, 100];
        assert!(tx.complete(&mut stats));
        assert!(!tx.gso());
        assert_eq!(stats.datagrams_sent, 4);
        assert_eq!(stats.gso_batches, 2);
        assert_eq!(tx.ops.len(), 7); // 6 split singles + 1 retained
        tx.prepare();
        tx.results = vec![1; 7];
        assert!(!tx.complete(&mut stats));
        assert!(!tx.is_pending());
        assert_eq!(stats.datagrams_sent, 11);
    }

    #[test]
    fn gro_split() {
        let mut stats = EngineStats::default();
        let mut payload: Vec<u8> = (0..250u32).map(|i| (i / 100) as u8).collect();
        let mut seen = Vec::new();
        let from: SocketAddr = addr(3).into();
        let n = deliver(
            &mut payload,
            from,
            Some(100),
            &mut stats,
            &mut |_, d: &mut [u8]| seen.push(d.to_vec()),
        );
        assert_eq!(n, 3);
        assert_eq!(seen[2], vec![2u8; 50]);
        assert_eq!((stats.gro_batches, stats.datagrams_received), (1, 3));
    }
}
