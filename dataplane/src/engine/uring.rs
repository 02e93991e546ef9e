//! The io_uring backend: one ring per engine (`SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN |
//! TASKRUN_FLAG`, no SQPOLL), a multishot `RecvMsg` on every socket fed by a provided-buffer
//! ring ([`BufRing`]), `SendMsg` SQEs pointing into the shared [`TxBatch`] slots, a `Read` SQE on
//! the waker's eventfd, and waits through `io_uring_enter` with an `EXT_ARG` timeout.
//!
//! Per duty cycle: (1) enter only if SQEs are queued or the kernel flagged deferred task work
//! (`IORING_SQ_TASKRUN`), reap the CQ, hand each received buffer to the protocol (split by the
//! `UDP_GRO` segment size), recycle every buffer into the buffer ring and publish the tail once,
//! re-arm any multishot receive that ended (`!more`, e.g. `ENOBUFS`); (2) push one `SendMsg`
//! per send op with `MSG_DONTWAIT` and enter until all of them completed (they complete inline;
//! `EAGAIN` comes back as a result rather than a poll-armed request), so the transmit arena is
//! free again when the cycle ends; (3) when parking, one `submit_with_args(1, timeout)`.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use memmap2::{MmapMut, MmapOptions};

use super::batch::{deliver, TxBatch};
use super::socket::{gro_segment_size, parse_sockaddr, SocketSet, CONTROL_CAPACITY, NAME_CAPACITY};
use super::stats::EngineStats;
use super::waker::Waker;
use super::EngineError;

/// Buffer group id of the provided-buffer ring.
const BUF_GROUP: u16 = 0x7a;
/// `user_data` kinds (top byte).
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_WAKER: u64 = 3;
const KIND_POLLOUT: u64 = 4;
const KIND_CANCEL: u64 = 5;
/// How long one wait for send completions may take before we look again, and how many such
/// waits before declaring the ring stalled.
const SEND_WAIT: Duration = Duration::from_millis(100);
const SEND_WAIT_ROUNDS: usize = 100;

fn token(kind: u64, slot: usize, low: u32) -> u64 {
    (kind << 56) | (((slot as u64) & 0xff_ffff) << 32) | low as u64
}

fn token_kind(user_data: u64) -> u64 {
    user_data >> 56
}

fn token_slot(user_data: u64) -> usize {
    ((user_data >> 32) & 0xff_ffff) as usize
}

fn token_low(user_data: u64) -> u32 {
    user_data as u32
}

/// A provided-buffer ring: `count` buffers of `buf_len` bytes in one anonymous mapping, and the
/// page-aligned ring of `io_uring_buf` entries the kernel takes them from. Modelled on
/// tokio-rs/io-uring `io-uring-test/src/tests/register_buf_ring.rs`.
struct BufRing {
    entries: *mut types::BufRingEntry,
    base: *mut u8,
    count: u16,
    mask: u16,
    tail: u16,
    buf_len: usize,
    // Owners of the memory above; declared last so they are dropped after everything else.
    _ring_memory: MmapMut,
    _buffer_memory: MmapMut,
}

impl BufRing {
    /// Maps and registers the ring, and provides every buffer.
    fn new(ring: &IoUring, count: u16, buf_len: usize) -> io::Result<BufRing> {
        let ring_bytes = (count as usize * size_of::<types::BufRingEntry>()).max(4096);
        let mut ring_memory = MmapOptions::new().len(ring_bytes).populate().map_anon()?;
        let mut buffer_memory = MmapOptions::new()
            .len(count as usize * buf_len)
            .map_anon()?;
        let entries = ring_memory.as_mut_ptr().cast::<types::BufRingEntry>();
        let base = buffer_memory.as_mut_ptr();
        // SAFETY: `entries` is page-aligned, zeroed, `count` (a power of two) entries long and
        // lives as long as this BufRing, which the backend drops only after the ring's
        // requests were cancelled (see `UringBackend::drop`) and the ring itself closed.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, BUF_GROUP, 0)?;
        }
        let mut buf_ring = BufRing {
            entries,
            base,
            count,
            mask: count - 1,
            tail: 0,
            buf_len,
            _ring_memory: ring_memory,
            _buffer_memory: buffer_memory,
        };
        for bid in 0..count {
            buf_ring.push(bid);
        }
        buf_ring.publish();
        Ok(buf_ring)
    }

    /// Queues buffer `bid` for the kernel (visible after [`BufRing::publish`]).
    fn push(&mut self, bid: u16) {
        if bid >= self.count {
            return;
        }
        // SAFETY: the index is masked into the ring's `count` entries; bid < count so the
        // buffer address is inside the buffer mapping. Only this thread writes entries, and
        // only entries past the published tail, which the kernel does not read.
        unsafe {
            let entry = &mut *self.entries.add((self.tail & self.mask) as usize);
            entry.set_addr(self.base.add(bid as usize * self.buf_len) as u64);
            entry.set_len(self.buf_len as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes pushed buffers to the kernel (release store of the tail).
    fn publish(&self) {
        // SAFETY: the tail is a u16 inside the first entry of the live, suitably aligned
        // mapping; the kernel reads it with acquire semantics, as an AtomicU16 requires.
        let tail = unsafe { &*(types::BufRingEntry::tail(self.entries).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Buffer `bid`'s first `len` bytes.
    ///
    /// The caller must only ask for a buffer the kernel handed back (its CQE was reaped and it
    /// was not pushed again yet), so nothing else accesses it meanwhile.
    fn buffer(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        if bid >= self.count {
            return None;
        }
        let len = len.min(self.buf_len);
        // SAFETY: bid < count so the range is inside the buffer mapping; per the contract above
        // the kernel no longer owns this buffer, and `&mut self` rules out other Rust borrows.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.base.add(bid as usize * self.buf_len), len)
        })
    }
}

/// A completion copied out of the CQ.
#[derive(Clone, Copy, Debug)]
struct Completion {
    user_data: u64,
    result: i32,
    flags: u32,
}

/// State of the io_uring backend.
pub(crate) struct UringBackend {
    // Field order is drop order: the ring (after cancellation in `Drop`) goes before the memory
    // its requests pointed at.
    ring: IoUring,
    bufs: BufRing,
    recv_msghdr: Box<libc::msghdr>,
    waker_buf: Box<u64>,
    waker: Waker,
    /// Per socket slot: the generation whose multishot receive is armed.
    armed: Vec<Option<u32>>,
    waker_armed: bool,
    /// The waker fired since the engine last asked (so the cycle must not park).
    woken: bool,
    pollout_armed: bool,
    /// Completions reaped but not yet processed (e.g. receives seen while waiting for sends).
    backlog: Vec<Completion>,
    gro: bool,
}

impl UringBackend {
    /// Builds and probes the ring; the message says what failed. Must run on the thread that
    /// will drive the engine (`SINGLE_ISSUER`).
    pub fn new(
        sockets: &SocketSet,
        waker: Waker,
        recv_buffers: usize,
        payload_capacity: usize,
        gro: bool,
        batch: usize,
    ) -> Result<Self, String> {
        let sq_entries = (batch * 2 + 16).next_power_of_two().clamp(64, 4096) as u32;
        let cq_entries = (recv_buffers * 4 + sq_entries as usize * 2).next_power_of_two() as u32;
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(cq_entries)
            .build(sq_entries)
            .map_err(|e| {
                format!(
                    "io_uring_setup(SINGLE_ISSUER|DEFER_TASKRUN|COOP_TASKRUN|TASKRUN_FLAG): {e}"
                )
            })?;
        if !ring.params().is_feature_ext_arg() {
            return Err("io_uring lacks IORING_FEAT_EXT_ARG (kernel < 5.11)".into());
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("io_uring probe: {e}"))?;
        for (name, code) in [
            ("RECVMSG", opcode::RecvMsgMulti::CODE),
            ("SENDMSG", opcode::SendMsg::CODE),
            ("READ", opcode::Read::CODE),
            ("POLL_ADD", opcode::PollAdd::CODE),
            ("ASYNC_CANCEL", opcode::AsyncCancel2::CODE),
        ] {
            if !probe.is_supported(code) {
                return Err(format!("io_uring opcode {name} not supported"));
            }
        }
        // io_uring_recvmsg_out (16 bytes) + name + control + payload, rounded to 64.
        let control = if gro { CONTROL_CAPACITY } else { 0 };
        let buf_len = (16 + NAME_CAPACITY + control + payload_capacity).div_ceil(64) * 64;
        let count =
            u16::try_from(recv_buffers).map_err(|_| "recv_buffers too large".to_string())?;
        let bufs = BufRing::new(&ring, count, buf_len)
            .map_err(|e| format!("io_uring provided-buffer ring registration: {e}"))?;
        // SAFETY: msghdr is a plain C struct; all-zero is valid. Only the two lengths matter
        // to a multishot RecvMsg.
        let mut recv_msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msghdr.msg_namelen = NAME_CAPACITY as libc::socklen_t;
        recv_msghdr.msg_controllen = control as _;
        let mut backend = UringBackend {
            ring,
            bufs,
            recv_msghdr,
            waker_buf: Box::new(0),
            waker,
            armed: Vec::new(),
            waker_armed: false,
            woken: false,
            pollout_armed: false,
            backlog: Vec::with_capacity(cq_entries as usize),
            gro,
        };
        backend
            .arm_all(sockets)
            .map_err(|e| format!("io_uring arm: {e}"))?;
        backend
            .ring
            .submit()
            .map_err(|e| format!("io_uring_enter: {e}"))?;
        // A kernel without multishot RecvMsg fails the request at once with EINVAL.
        backend.reap();
        for c in &backend.backlog {
            if token_kind(c.user_data) == KIND_RECV && c.result == -libc::EINVAL {
                return Err("multishot RecvMsg rejected with EINVAL (kernel < 6.0)".into());
            }
        }
        Ok(backend)
    }

    /// Pushes an SQE, submitting first if the queue is full.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..2 {
            // SAFETY: every SQE built by this backend points only at memory owned by the
            // backend or the TxBatch that stays valid until its completion is reaped.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    /// Arms the multishot receive of every socket that has none, and the waker read.
    fn arm_all(&mut self, sockets: &SocketSet) -> io::Result<()> {
        if self.armed.len() < sockets.slot_count() {
            self.armed.resize(sockets.slot_count(), None);
        }
        for (index, slot) in sockets.iter() {
            if self.armed[index] == Some(slot.generation) {
                continue;
            }
            let entry =
                opcode::RecvMsgMulti::new(types::Fd(slot.fd()), &*self.recv_msghdr, BUF_GROUP)
                    .build()
                    .user_data(token(KIND_RECV, index, slot.generation));
            self.push(&entry)?;
            self.armed[index] = Some(slot.generation);
        }
        if !self.waker_armed {
            let entry = opcode::Read::new(
                types::Fd(self.waker.raw_fd()),
                (&mut *self.waker_buf as *mut u64).cast(),
                8,
            )
            .build()
            .user_data(token(KIND_WAKER, 0, 0));
            self.push(&entry)?;
            self.waker_armed = true;
        }
        Ok(())
    }

    /// Copies every available CQE into the backlog.
    fn reap(&mut self) {
        for cqe in self.ring.completion() {
            self.backlog.push(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
    }

    /// Whether completions are waiting to be processed.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Whether the waker fired since the last call (a wake-up consumed by a busy cycle must
    /// still keep the following park from blocking).
    pub fn take_woken(&mut self) -> bool {
        std::mem::take(&mut self.woken)
    }

    /// Stops receiving on socket `slot` (its multishot receive is cancelled synchronously).
    pub fn remove_socket(&mut self, slot: usize, generation: u32) {
        if self.armed.get(slot).copied().flatten() != Some(generation) {
            return;
        }
        self.armed[slot] = None;
        let user_data = token(KIND_RECV, slot, generation);
        let timeout = types::Timespec::new().sec(1);
        let cancelled = self.ring.submitter().register_sync_cancel(
            Some(timeout),
            types::CancelBuilder::user_data(user_data).all(),
        );
        if cancelled.is_err() {
            let entry =
                opcode::AsyncCancel::new(user_data)
                    .build()
                    .user_data(token(KIND_CANCEL, 0, 0));
            let _ = self.push(&entry);
        }
    }

    /// Step (1) of the duty cycle; see the module docs.
    pub fn receive<F>(
        &mut self,
        sockets: &SocketSet,
        stats: &mut EngineStats,
        sink: &mut F,
    ) -> Result<usize, EngineError>
    where
        F: FnMut(SocketAddr, &mut [u8]),
    {
        let needs_enter = {
            let sq = self.ring.submission();
            !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
        };
        if needs_enter {
            stats.recv_syscalls += 1;
            if let Err(e) = self.ring.submit() {
                if !transient(&e) {
                    return Err(EngineError::Io {
                        context: "io_uring_enter",
                        source: e,
                    });
                }
            }
        }
        self.reap();
        let mut delivered = 0;
        let mut recycled = false;
        let backlog = std::mem::take(&mut self.backlog);
        for c in &backlog {
            match token_kind(c.user_data) {
                KIND_RECV => {
                    delivered += self.on_recv(c, sockets, stats, sink);
                    recycled |= cqueue::buffer_select(c.flags).is_some();
                }
                KIND_WAKER => {
                    self.waker_armed = false;
                    if c.result > 0 {
                        stats.wakeups += 1;
                        self.woken = true;
                    }
                }
                KIND_POLLOUT => self.pollout_armed = false,
                // Sends are reaped in `send`; a late one (impossible by construction) and
                // cancel results carry nothing to act on.
                _ => {}
            }
        }
        self.backlog = backlog;
        self.backlog.clear();
        if recycled {
            self.bufs.publish();
        }
        self.arm_all(sockets).map_err(|e| EngineError::Io {
            context: "io_uring push",
            source: e,
        })?;
        Ok(delivered)
    }

    /// Handles one receive completion: delivers its datagrams, recycles its buffer and marks
    /// the socket for re-arming when the multishot ended.
    fn on_recv<F>(
        &mut self,
        c: &Completion,
        sockets: &SocketSet,
        stats: &mut EngineStats,
        sink: &mut F,
    ) -> usize
    where
        F: FnMut(SocketAddr, &mut [u8]),
    {
        let slot = token_slot(c.user_data);
        let generation = token_low(c.user_data);
        let current = sockets.get(slot).map(|s| s.generation) == Some(generation);
        if !cqueue::more(c.flags)
            && current
            && self.armed.get(slot).copied().flatten() == Some(generation)
        {
            self.armed[slot] = None;
            stats.recv_rearms += 1;
        }
        let bid = cqueue::buffer_select(c.flags);
        if c.result < 0 {
            match -c.result {
                libc::ENOBUFS => stats.enobufs_rearms += 1,
                libc::ECANCELED | libc::EAGAIN | libc::EINTR => {}
                _ => stats.recv_errors += 1,
            }
            if let Some(bid) = bid {
                self.bufs.push(bid);
            }
            return 0;
        }
        let Some(bid) = bid else {
            stats.recv_errors += 1;
            return 0;
        };
        let delivered = if current {
            self.parse_and_deliver(bid, c.result as usize, stats, sink)
        } else {
            0
        };
        self.bufs.push(bid);
        delivered
    }

    fn parse_and_deliver<F>(
        &mut self,
        bid: u16,
        len: usize,
        stats: &mut EngineStats,
        sink: &mut F,
    ) -> usize
    where
        F: FnMut(SocketAddr, &mut [u8]),
    {
        let gro = self.gro;
        let msghdr: &libc::msghdr = &self.recv_msghdr;
        let (namelen, controllen) = (msghdr.msg_namelen, msghdr.msg_controllen);
        let Some(buffer) = self.bufs.buffer(bid, len) else {
            stats.recv_errors += 1;
            return 0;
        };
        // A msghdr copy with just the two lengths, so `buffer` is the only borrow of self.
        // SAFETY: msghdr is a plain C struct; all-zero is valid.
        let mut template: libc::msghdr = unsafe { std::mem::zeroed() };
        template.msg_namelen = namelen;
        template.msg_controllen = controllen;
        let (from, segment, truncated, start, end) =
            match types::RecvMsgOut::parse(buffer, &template) {
                Ok(out) => {
                    let from = parse_sockaddr(out.name_data());
                    let segment = if gro {
                        gro_segment_size(out.control_data())
                    } else {
                        None
                    };
                    let payload = out.payload_data();
                    let start = payload.as_ptr() as usize - buffer.as_ptr() as usize;
                    (
                        from,
                        segment,
                        out.is_payload_truncated(),
                        start,
                        start + payload.len(),
                    )
                }
                Err(()) => {
                    stats.recv_errors += 1;
                    return 0;
                }
            };
        if truncated {
            stats.truncated += 1;
            return 0;
        }
        let Some(from) = from else {
            stats.recv_errors += 1;
            return 0;
        };
        match buffer.get_mut(start..end) {
            Some(payload) => deliver(payload, from, segment, stats, sink),
            None => {
                stats.recv_errors += 1;
                0
            }
        }
    }

    /// Step (2): one `SendMsg` SQE per op, then enter until every send completed.
    pub fn send(
        &mut self,
        sockets: &SocketSet,
        tx: &mut TxBatch,
        stats: &mut EngineStats,
    ) -> Result<(), EngineError> {
        let fd = types::Fd(sockets.unicast().fd());
        let n = tx.ops.len();
        for k in 0..n {
            let entry = opcode::SendMsg::new(fd, tx.msghdr_ptr(k))
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(token(KIND_SEND, 0, k as u32));
            self.push(&entry).map_err(|e| EngineError::Io {
                context: "io_uring push",
                source: e,
            })?;
            stats.send_syscalls += 1;
        }
        let mut outstanding = n;
        let timeout = types::Timespec::from(SEND_WAIT);
        let mut rounds = 0;
        while outstanding > 0 {
            let args = types::SubmitArgs::new().timespec(&timeout);
            stats.recv_syscalls += 1;
            if let Err(e) = self.ring.submitter().submit_with_args(outstanding, &args) {
                if !transient(&e) {
                    return Err(EngineError::Io {
                        context: "io_uring_enter",
                        source: e,
                    });
                }
            }
            for cqe in self.ring.completion() {
                let c = Completion {
                    user_data: cqe.user_data(),
                    result: cqe.result(),
                    flags: cqe.flags(),
                };
                if token_kind(c.user_data) == KIND_SEND {
                    let k = token_low(c.user_data) as usize;
                    if let Some(result) = tx.results.get_mut(k) {
                        *result = c.result;
                        outstanding = outstanding.saturating_sub(1);
                    }
                } else {
                    self.backlog.push(c);
                }
            }
            rounds += 1;
            if rounds >= SEND_WAIT_ROUNDS && outstanding > 0 {
                return Err(EngineError::Stalled(format!(
                    "{outstanding} io_uring sends did not complete in {:?}",
                    SEND_WAIT * SEND_WAIT_ROUNDS as u32
                )));
            }
        }
        Ok(())
    }

    /// Step (3): wait for any completion (a datagram, the waker, writability when
    /// `want_writable`) or `timeout`.
    pub fn park(
        &mut self,
        sockets: &SocketSet,
        timeout: Duration,
        want_writable: bool,
        stats: &mut EngineStats,
    ) -> Result<(), EngineError> {
        if want_writable && !self.pollout_armed {
            let entry =
                opcode::PollAdd::new(types::Fd(sockets.unicast().fd()), libc::POLLOUT as u32)
                    .build()
                    .user_data(token(KIND_POLLOUT, 0, 0));
            self.push(&entry).map_err(|e| EngineError::Io {
                context: "io_uring push",
                source: e,
            })?;
            self.pollout_armed = true;
        }
        self.arm_all(sockets).map_err(|e| EngineError::Io {
            context: "io_uring push",
            source: e,
        })?;
        self.reap();
        if self.has_backlog() {
            return Ok(());
        }
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        stats.parks += 1;
        stats.recv_syscalls += 1;
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(EngineError::Io {
                context: "io_uring_enter",
                source: e,
            }),
        }
    }
}

/// Errors of `io_uring_enter` that only mean "look again": timeout, signal, CQ busy.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
    )
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        // Cancel every request (multishot receives, the waker read, a poll) and wait for the
        // cancellations, so no request can touch the buffers once they are unmapped.
        let timeout = types::Timespec::new().sec(1);
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(Some(timeout), types::CancelBuilder::any());
        let zero = types::Timespec::new();
        let args = types::SubmitArgs::new().timespec(&zero);
        let _ = self.ring.submitter().submit_with_args(0, &args);
        self.ring.completion().sync();
        let _ = self.ring.submitter().unregister_buf_ring(BUF_GROUP);
    }
}
