//! The portable backend: non-blocking sockets, `recvmmsg(2)` / `sendmmsg(2)` batches (GSO as a
//! per-message `UDP_SEGMENT` cmsg inside `sendmmsg`, GRO through the `UDP_GRO` cmsg), and
//! `ppoll(2)` on the sockets plus the waker's eventfd for parking.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::batch::{deliver, TxBatch};
use super::socket::{gro_segment_size, parse_sockaddr, ControlBuf, SocketSet, NAME_CAPACITY};
use super::stats::EngineStats;
use super::waker::Waker;
use super::EngineError;

/// Most messages per `sendmmsg` call (the kernel's `UIO_MAXIOV`).
const SENDMMSG_MAX: usize = 1024;
/// `recvmmsg` calls per socket per cycle at most (so one busy socket cannot starve sends).
const RECV_CALLS_PER_CYCLE: usize = 4;

/// State of the portable backend: receive slots preallocated for one `recvmmsg` batch.
pub(crate) struct PortableBackend {
    batch: usize,
    buf_len: usize,
    buffers: Box<[u8]>,
    iovecs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    controls: Box<[ControlBuf]>,
    msgs: Box<[libc::mmsghdr]>,
    pollfds: Vec<libc::pollfd>,
    waker: Waker,
    gro: bool,
}

impl PortableBackend {
    /// Preallocates `batch` receive slots of `buf_len` payload bytes each.
    pub fn new(batch: usize, buf_len: usize, gro: bool, waker: Waker) -> Self {
        // SAFETY: these are plain C structs for which all-zero is a valid (empty) value.
        let (storage, msg): (libc::sockaddr_storage, libc::mmsghdr) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        PortableBackend {
            batch,
            buf_len,
            buffers: vec![0u8; batch * buf_len].into_boxed_slice(),
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                batch
            ]
            .into_boxed_slice(),
            names: vec![storage; batch].into_boxed_slice(),
            controls: vec![ControlBuf([0; super::socket::CONTROL_CAPACITY]); batch]
                .into_boxed_slice(),
            msgs: vec![msg; batch].into_boxed_slice(),
            pollfds: Vec::with_capacity(8),
            waker,
            gro,
        }
    }

    /// Points every receive slot at its buffers and resets the lengths the kernel overwrites.
    fn reset_slots(&mut self) {
        let buffers = self.buffers.as_mut_ptr();
        for i in 0..self.batch {
            // SAFETY: i < batch, so the offset is inside `buffers` (batch * buf_len bytes).
            self.iovecs[i].iov_base = unsafe { buffers.add(i * self.buf_len) }.cast();
            self.iovecs[i].iov_len = self.buf_len;
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = NAME_CAPACITY as libc::socklen_t;
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            if self.gro {
                hdr.msg_control = self.controls[i].0.as_mut_ptr().cast();
                hdr.msg_controllen = self.controls[i].0.len() as _;
            } else {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
    }

    /// Receives what is queued on every socket (bounded per cycle) and feeds each datagram to
    /// `sink`. Returns the number of datagrams delivered.
    pub fn receive<F>(
        &mut self,
        sockets: &SocketSet,
        stats: &mut EngineStats,
        sink: &mut F,
    ) -> Result<usize, EngineError>
    where
        F: FnMut(std::net::SocketAddr, &mut [u8]),
    {
        let mut delivered = 0;
        for (_, slot) in sockets.iter() {
            for _ in 0..RECV_CALLS_PER_CYCLE {
                self.reset_slots();
                let got = self.recvmmsg(slot.fd(), stats);
                for i in 0..got {
                    delivered += self.deliver_slot(i, stats, sink);
                }
                if got < self.batch {
                    break;
                }
            }
        }
        Ok(delivered)
    }

    /// One `recvmmsg`; returns how many slots were filled (0 on "nothing queued" or error).
    fn recvmmsg(&mut self, fd: RawFd, stats: &mut EngineStats) -> usize {
        stats.recv_syscalls += 1;
        // SAFETY: `msgs` holds `batch` initialised mmsghdrs whose name, iovec and control
        // pointers point into buffers owned by `self` that outlive the call.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.batch as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                _ => stats.recv_errors += 1,
            }
            return 0;
        }
        (rc as usize).min(self.batch)
    }

    fn deliver_slot<F>(&mut self, i: usize, stats: &mut EngineStats, sink: &mut F) -> usize
    where
        F: FnMut(std::net::SocketAddr, &mut [u8]),
    {
        let msg = &self.msgs[i];
        if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            stats.truncated += 1;
            return 0;
        }
        let len = (msg.msg_len as usize).min(self.buf_len);
        let name_len = (msg.msg_hdr.msg_namelen as usize).min(NAME_CAPACITY);
        let control_len = msg
            .msg_hdr
            .msg_controllen
            .min(super::socket::CONTROL_CAPACITY);
        // SAFETY: names[i] is a live sockaddr_storage of NAME_CAPACITY bytes; name_len is
        // clamped to that size.
        let name = unsafe {
            std::slice::from_raw_parts(
                (&self.names[i] as *const libc::sockaddr_storage).cast::<u8>(),
                name_len,
            )
        };
        let Some(from) = parse_sockaddr(name) else {
            stats.recv_errors += 1;
            return 0;
        };
        let segment = if self.gro {
            gro_segment_size(&self.controls[i].0[..control_len])
        } else {
            None
        };
        let payload = &mut self.buffers[i * self.buf_len..i * self.buf_len + len];
        deliver(payload, from, segment, stats, sink)
    }

    /// Sends every op of the prepared batch with `sendmmsg` (GSO ops carry their cmsg), writing
    /// each op's result. Stops at a full socket buffer; the rest stays "not attempted".
    pub fn send(&mut self, sockets: &SocketSet, tx: &mut TxBatch, stats: &mut EngineStats) {
        let fd = sockets.unicast().fd();
        let n = tx.ops.len();
        let mut k = 0;
        let mut interrupts = 0;
        while k < n {
            let chunk = (n - k).min(SENDMMSG_MAX);
            stats.send_syscalls += 1;
            let msgs = tx.mmsgs_mut();
            // SAFETY: `msgs[k..k + chunk]` are mmsghdrs built by `TxBatch::prepare`, whose
            // pointers reference buffers owned by `tx` that are not touched during the call.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs.as_mut_ptr().add(k),
                    chunk as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                let sent = (rc as usize).min(chunk);
                for j in k..k + sent {
                    tx.results[j] = i32::try_from(tx.mmsgs_mut()[j].msg_len).unwrap_or(i32::MAX);
                }
                k += sent;
                continue;
            }
            let errno = if rc == 0 {
                libc::EAGAIN
            } else {
                io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO)
            };
            match errno {
                libc::EINTR if interrupts < 8 => interrupts += 1,
                libc::EAGAIN | libc::ENOBUFS | libc::EINTR => {
                    tx.results[k] = -errno;
                    break;
                }
                _ => {
                    tx.results[k] = -errno;
                    k += 1;
                }
            }
        }
    }

    /// Blocks in `ppoll` until a socket is readable (or the unicast socket writable when
    /// `want_writable`), the waker fires, or `timeout` passes.
    pub fn park(
        &mut self,
        sockets: &SocketSet,
        timeout: Duration,
        want_writable: bool,
        stats: &mut EngineStats,
    ) -> Result<(), EngineError> {
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.waker.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for (index, slot) in sockets.iter() {
            let mut events = libc::POLLIN;
            if index == 0 && want_writable {
                events |= libc::POLLOUT;
            }
            self.pollfds.push(libc::pollfd {
                fd: slot.fd(),
                events,
                revents: 0,
            });
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        stats.parks += 1;
        // SAFETY: `pollfds` is a live array of the given length; `ts` outlives the call; a null
        // sigmask means "leave the mask alone".
        let rc = unsafe {
            libc::ppoll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(EngineError::Io {
                    context: "ppoll",
                    source: err,
                });
            }
            return Ok(());
        }
        if self.pollfds[0].revents & libc::POLLIN != 0 {
            self.waker.drain();
            stats.wakeups += 1;
        }
        Ok(())
    }
}
