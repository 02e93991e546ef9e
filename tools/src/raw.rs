//! The raw baseline transport: plain UDP over IPv4 multicast (or unicast fan-out).
//!
//! One message = one datagram. Sends are batched with `sendmmsg` (up to `batch` messages
//! are collected by `try_send`, then pushed by `flush`), receives with `recvmmsg`; the
//! socket is non-blocking and `wait` is a `ppoll`. Nothing is retransmitted, ordered or
//! acknowledged: lost datagrams are simply missing at the receiver, which is exactly the
//! baseline the reliable data plane is compared against.
//!
//! Multicast sockets are bound to `group:port`, joined on the configured interface, with
//! `IP_MULTICAST_ALL` off (only this group's traffic), `IP_MULTICAST_IF` set, TTL 1.
//! In unicast mode every member binds its own `members[index]` address and each message
//! is sent once to every other member.
//!
//! Counters: `tx_datagrams`, `tx_syscalls`, `tx_would_block`, `tx_enobufs`,
//! `rx_datagrams`, `rx_syscalls`, `rx_truncated`, `rx_injected_drops`, `rx_own` (this
//! member's own datagrams looped back — always the case on `lo` — dropped before delivery),
//! `rx_socket_drops` (the kernel's per-socket drop count from `/proc/net/udp`: datagrams
//! discarded because the receive buffer was full), `so_rcvbuf` (effective buffer bytes).

use std::collections::BTreeMap;
use std::io;
use std::mem;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::payload::Header;
use crate::transport::{BenchTransport, SendOutcome, TransportConfig};

/// Upper bound on datagrams per `sendmmsg` call (the kernel's UIO_MAXIOV).
const MAX_MMSG: usize = 1024;

/// Receive rounds per `poll` call, so one busy socket cannot starve the caller's sender.
const RX_ROUNDS: usize = 8;

/// Plain UDP multicast / unicast transport (see the module docs).
pub struct RawTransport {
    sock: Socket,
    index: u32,
    dests: Vec<libc::sockaddr_in>,
    slot: usize,
    batch: usize,
    tx_buf: Vec<u8>,
    tx_len: Vec<usize>,
    tx_count: usize,
    tx_pos: usize,
    tx_hdrs: Vec<libc::mmsghdr>,
    tx_iov: Vec<libc::iovec>,
    rx_slot: usize,
    rx_buf: Vec<u8>,
    rx_hdrs: Vec<libc::mmsghdr>,
    rx_iov: Vec<libc::iovec>,
    loss_threshold: u64,
    rng: u64,
    c: Counters,
}

// SAFETY: the raw pointers inside the mmsghdr/iovec vectors only ever point into this
// struct's own heap buffers (`tx_buf`, `rx_buf`, `dests`, the iovec vectors), which move
// with it; they are rebuilt before every `sendmmsg` and never shared.
unsafe impl Send for RawTransport {}

#[derive(Debug, Default, Clone)]
struct Counters {
    tx_datagrams: u64,
    tx_syscalls: u64,
    tx_would_block: u64,
    tx_enobufs: u64,
    rx_datagrams: u64,
    rx_syscalls: u64,
    rx_truncated: u64,
    rx_injected_drops: u64,
    rx_own: u64,
    so_rcvbuf: u64,
}

fn to_sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from_ne_bytes(a.ip().octets()),
    };
    sa
}

/// Sets SO_RCVBUF/SO_SNDBUF to `bytes`, using the *FORCE variants (which ignore
/// `net.core.rmem_max`) when permitted; returns the effective receive buffer size.
pub fn set_socket_buffers(sock: &Socket, bytes: usize) -> io::Result<usize> {
    let val = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // SAFETY: setsockopt with a valid fd and a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                force,
                (&val as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // Not privileged: the plain option, silently capped by rmem_max/wmem_max.
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    plain,
                    (&val as *const libc::c_int).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
    }
    sock.recv_buffer_size()
}

/// The kernel's drop counter for the UDP socket `fd` (last column of `/proc/net/udp`),
/// read from the calling thread's network namespace. `None` if not found.
pub fn socket_drops(fd: i32) -> Option<u64> {
    // SAFETY: fstat on a valid fd into a zeroed stat buffer.
    let ino = unsafe {
        let mut st: libc::stat = mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return None;
        }
        st.st_ino
    };
    let text = std::fs::read_to_string("/proc/thread-self/net/udp").ok()?;
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 13 && cols[9].parse::<u64>().ok()? == ino {
            cols.last()?.parse().ok()
        } else {
            None
        }
    })
}

impl RawTransport {
    /// Opens and configures the socket for member `cfg.index`.
    pub fn open(cfg: &TransportConfig) -> io::Result<RawTransport> {
        let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        let so_rcvbuf = set_socket_buffers(&sock, cfg.socket_buffer)?;
        let me = *cfg.members.get(cfg.index as usize).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("member index {} out of range", cfg.index),
            )
        })?;
        let dests: Vec<libc::sockaddr_in> = if cfg.unicast {
            sock.bind(&SockAddr::from(me))
                .map_err(|e| ctx(&format!("bind {me}"), e))?;
            cfg.members
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != cfg.index as usize)
                .map(|(_, &a)| to_sockaddr_in(a))
                .collect()
        } else {
            sock.bind(&SockAddr::from(cfg.group))
                .map_err(|e| ctx(&format!("bind {}", cfg.group), e))?;
            sock.join_multicast_v4(cfg.group.ip(), &cfg.iface)
                .map_err(|e| ctx(&format!("join {} on {}", cfg.group.ip(), cfg.iface), e))?;
            sock.set_multicast_all_v4(false)?;
            vec![to_sockaddr_in(cfg.group)]
        };
        sock.set_multicast_if_v4(&cfg.iface)
            .map_err(|e| ctx(&format!("IP_MULTICAST_IF {}", cfg.iface), e))?;
        sock.set_multicast_ttl_v4(1)?;
        sock.set_multicast_loop_v4(cfg.multicast_loop)?;

        let batch = cfg.batch.clamp(1, 256);
        let slot = cfg.max_payload.max(crate::payload::HEADER_LEN);
        // Receive slots have one spare byte so an oversized datagram shows up as MSG_TRUNC.
        let rx_slot = slot + 1;
        let rx_batch = batch.max(32);
        let mut t = RawTransport {
            sock,
            index: cfg.index,
            dests,
            slot,
            batch,
            tx_buf: vec![0; slot * batch],
            tx_len: vec![0; batch],
            tx_count: 0,
            tx_pos: 0,
            tx_hdrs: Vec::new(),
            tx_iov: Vec::new(),
            rx_slot,
            rx_buf: vec![0; rx_slot * rx_batch],
            // SAFETY: mmsghdr / iovec are plain old data; zeroed is valid, filled below.
            rx_hdrs: vec![unsafe { mem::zeroed() }; rx_batch],
            rx_iov: vec![unsafe { mem::zeroed() }; rx_batch],
            loss_threshold: ((cfg.rx_loss_pct.clamp(0.0, 100.0) / 100.0) * u64::MAX as f64) as u64,
            rng: cfg.seed | 1,
            c: Counters {
                so_rcvbuf: so_rcvbuf as u64,
                ..Counters::default()
            },
        };
        t.bind_rx_buffers();
        Ok(t)
    }

    fn bind_rx_buffers(&mut self) {
        let base = self.rx_buf.as_mut_ptr();
        for (i, (iov, hdr)) in self.rx_iov.iter_mut().zip(&mut self.rx_hdrs).enumerate() {
            // SAFETY: i * rx_slot < rx_buf.len() by construction.
            iov.iov_base = unsafe { base.add(i * self.rx_slot) }.cast();
            iov.iov_len = self.rx_slot;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Sends queued datagrams from `tx_pos` on; resets the batch when all went out.
    fn push(&mut self) -> io::Result<SendOutcome> {
        let ndest = self.dests.len();
        let total = self.tx_count * ndest;
        // Bounded: each iteration either advances tx_pos or returns.
        while self.tx_pos < total {
            let n = (total - self.tx_pos).min(MAX_MMSG);
            self.tx_iov.clear();
            self.tx_hdrs.clear();
            for e in self.tx_pos..self.tx_pos + n {
                let s = e / ndest;
                self.tx_iov.push(libc::iovec {
                    // SAFETY: s < tx_count <= batch, so the slot lies inside tx_buf.
                    iov_base: unsafe { self.tx_buf.as_mut_ptr().add(s * self.slot) }.cast(),
                    iov_len: self.tx_len[s],
                });
            }
            for (k, e) in (self.tx_pos..self.tx_pos + n).enumerate() {
                // SAFETY: zeroed mmsghdr is valid; pointers set below stay valid for the
                // duration of the sendmmsg call (no reallocation in between).
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_name = (&mut self.dests[e % ndest] as *mut libc::sockaddr_in).cast();
                h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_hdr.msg_iov = &mut self.tx_iov[k];
                h.msg_hdr.msg_iovlen = 1;
                self.tx_hdrs.push(h);
            }
            self.c.tx_syscalls += 1;
            // SAFETY: tx_hdrs holds n initialised headers pointing at live buffers.
            let rc = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    self.tx_hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        self.c.tx_would_block += 1;
                        return Ok(SendOutcome::WouldBlock);
                    }
                    Some(libc::ENOBUFS) => {
                        self.c.tx_enobufs += 1;
                        return Ok(SendOutcome::WouldBlock);
                    }
                    Some(libc::EINTR) => continue,
                    Some(libc::ECONNREFUSED) => {
                        // A unicast peer's port is closed (ICMP error queued): skip one.
                        self.tx_pos += 1;
                        continue;
                    }
                    _ => return Err(io::Error::new(e.kind(), format!("sendmmsg: {e}"))),
                }
            }
            self.tx_pos += rc as usize;
            self.c.tx_datagrams += rc as u64;
        }
        self.tx_count = 0;
        self.tx_pos = 0;
        Ok(SendOutcome::Sent)
    }

    /// The effective SO_RCVBUF in bytes.
    pub fn recv_buffer(&self) -> u64 {
        self.c.so_rcvbuf
    }
}

impl BenchTransport for RawTransport {
    fn try_send(&mut self, payload: &[u8]) -> io::Result<SendOutcome> {
        if payload.len() > self.slot {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "payload {} B exceeds max_payload {} B",
                    payload.len(),
                    self.slot
                ),
            ));
        }
        if self.tx_count == self.batch && self.push()? == SendOutcome::WouldBlock {
            return Ok(SendOutcome::WouldBlock);
        }
        let s = self.tx_count;
        self.tx_buf[s * self.slot..s * self.slot + payload.len()].copy_from_slice(payload);
        self.tx_len[s] = payload.len();
        self.tx_count += 1;
        if self.tx_count == self.batch {
            // Errors other than WouldBlock surface here; WouldBlock keeps the batch queued.
            self.push()?;
        }
        Ok(SendOutcome::Sent)
    }

    fn flush(&mut self) -> io::Result<SendOutcome> {
        if self.tx_count == 0 {
            return Ok(SendOutcome::Sent);
        }
        self.push()
    }

    fn poll(&mut self, on_delivery: &mut dyn FnMut(u32, &[u8])) -> io::Result<usize> {
        let mut delivered = 0;
        for _ in 0..RX_ROUNDS {
            let vlen = self.rx_hdrs.len();
            self.c.rx_syscalls += 1;
            // SAFETY: rx_hdrs point at rx_iov / rx_buf (bound in bind_rx_buffers; neither
            // vector is ever resized); msg_name is null.
            let rc = unsafe {
                libc::recvmmsg(
                    self.sock.as_raw_fd(),
                    self.rx_hdrs.as_mut_ptr(),
                    vlen as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    // A queued ICMP error (unicast peer gone) is reported once; go on.
                    Some(libc::ECONNREFUSED) => continue,
                    _ => return Err(io::Error::new(e.kind(), format!("recvmmsg: {e}"))),
                }
            }
            let n = rc as usize;
            for i in 0..n {
                let len = self.rx_hdrs[i].msg_len as usize;
                let flags = self.rx_hdrs[i].msg_hdr.msg_flags;
                self.rx_hdrs[i].msg_hdr.msg_flags = 0;
                self.c.rx_datagrams += 1;
                if flags & libc::MSG_TRUNC != 0 || len > self.slot {
                    self.c.rx_truncated += 1;
                    continue;
                }
                let range = i * self.rx_slot..i * self.rx_slot + len;
                let sender = Header::sender_of(&self.rx_buf[range.clone()]).unwrap_or(u32::MAX);
                if sender == self.index {
                    // Our own datagram looped back (always happens on `lo`).
                    self.c.rx_own += 1;
                    continue;
                }
                if self.loss_threshold > 0 && self.next_random() < self.loss_threshold {
                    self.c.rx_injected_drops += 1;
                    continue;
                }
                on_delivery(sender, &self.rx_buf[range]);
                delivered += 1;
            }
            if n < vlen {
                break;
            }
        }
        Ok(delivered)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let mut events = libc::POLLIN;
        if self.tx_count > 0 {
            events |= libc::POLLOUT;
        }
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
        let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.tx_count
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        let c = &self.c;
        let mut m = BTreeMap::new();
        for (k, v) in [
            ("tx_datagrams", c.tx_datagrams),
            ("tx_syscalls", c.tx_syscalls),
            ("tx_would_block", c.tx_would_block),
            ("tx_enobufs", c.tx_enobufs),
            ("rx_datagrams", c.rx_datagrams),
            ("rx_syscalls", c.rx_syscalls),
            ("rx_truncated", c.rx_truncated),
            ("rx_injected_drops", c.rx_injected_drops),
            ("rx_own", c.rx_own),
            ("so_rcvbuf", c.so_rcvbuf),
        ] {
            m.insert(k.to_string(), v);
        }
        if let Some(d) = socket_drops(self.sock.as_raw_fd()) {
            m.insert("rx_socket_drops".to_string(), d);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{now_ns, Header};
    use std::net::Ipv4Addr;

    fn cfg(index: u32, port: u16, unicast: bool) -> TransportConfig {
        let lo = Ipv4Addr::LOCALHOST;
        TransportConfig {
            index,
            members: (0..3)
                .map(|i| SocketAddrV4::new(lo, port + 1 + i))
                .collect(),
            group: SocketAddrV4::new(Ipv4Addr::new(239, 255, 201, (port % 250) as u8), port),
            iface: lo,
            unicast,
            multicast_loop: true,
            max_payload: 100,
            rx_loss_pct: 0.0,
            seed: 1,
            socket_buffer: 1 << 20,
            batch: 8,
        }
    }

    fn exchange(unicast: bool, port: u16) {
        let mut a = RawTransport::open(&cfg(0, port, unicast)).unwrap();
        let mut b = RawTransport::open(&cfg(1, port, unicast)).unwrap();
        let mut c = RawTransport::open(&cfg(2, port, unicast)).unwrap();
        let mut msg = vec![0u8; 100];
        for seq in 0..20 {
            Header {
                sender: 0,
                seq,
                send_ns: now_ns(),
                tag: 9,
            }
            .write(&mut msg);
            assert_eq!(a.try_send(&msg).unwrap(), SendOutcome::Sent);
        }
        assert_eq!(a.flush().unwrap(), SendOutcome::Sent);
        assert_eq!(a.pending(), 0);
        for t in [&mut b, &mut c] {
            let mut seqs = Vec::new();
            for _ in 0..100 {
                t.poll(&mut |s, p| {
                    assert_eq!(s, 0);
                    seqs.push(Header::read(p).unwrap().seq);
                })
                .unwrap();
                if seqs.len() == 20 {
                    break;
                }
                t.wait(Duration::from_millis(10)).unwrap();
            }
            assert_eq!(seqs, (0..20).collect::<Vec<_>>());
            assert_eq!(t.counters()["rx_datagrams"], 20);
        }
        assert_eq!(a.counters()["tx_datagrams"], if unicast { 40 } else { 20 });
    }

    #[test]
    fn multicast_on_loopback() {
        exchange(false, 31_000 + (std::process::id() % 1000) as u16 * 4);
    }

    #[test]
    fn unicast_fan_out() {
        exchange(true, 35_000 + (std::process::id() % 1000) as u16 * 4);
    }
}
