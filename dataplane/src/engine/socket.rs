//! Socket set-up and the small pieces of raw socket plumbing both backends share: the socket
//! set (unicast socket + one socket per joined multicast group), buffer sizing, GSO/GRO
//! probing, `sockaddr` conversion and `cmsg` encoding/decoding.
//!
//! Network safety: the unicast socket (which sends all multicast) always gets an explicit
//! `IP_MULTICAST_IF` and the configured TTL (default 1), and every join names the configured
//! interface, so multicast cannot leave through a default route.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::config::EngineConfig;

/// Room for the `sockaddr` of a received datagram (IPv4 sockets, but be generous).
pub(crate) const NAME_CAPACITY: usize = size_of::<libc::sockaddr_storage>();
/// Room for received control messages (one `UDP_GRO` int needs 20 bytes).
pub(crate) const CONTROL_CAPACITY: usize = 64;
/// Most segments per `UDP_SEGMENT` send (the kernel's `UDP_MAX_SEGMENTS` is 64 on older and
/// 128 on newer kernels).
pub(crate) const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload over IPv4; also the bound on one GSO send's total payload.
pub(crate) const MAX_UDP_PAYLOAD: usize = 65507;
/// Receive payload capacity when GRO is on: one whole coalesced train.
pub(crate) const GRO_PAYLOAD_CAPACITY: usize = 65536;

/// `SOL_UDP` option numbers (stable kernel ABI; defined here so the build does not depend on
/// which libc version exports them).
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

static CLAMP_WARNED: AtomicBool = AtomicBool::new(false);

/// One open socket of an engine.
#[derive(Debug)]
pub(crate) struct SocketSlot {
    /// The socket itself (non-blocking).
    pub socket: Socket,
    /// `Some(group)` for a multicast receive socket, `None` for the unicast socket.
    pub group: Option<SocketAddrV4>,
    /// Distinguishes this socket from earlier occupants of the same slot (io_uring tokens).
    pub generation: u32,
}

impl SocketSlot {
    /// The raw descriptor.
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The engine's sockets. Slot 0 is the unicast socket; multicast sockets take the other slots,
/// which are reused after [`SocketSet::remove`].
#[derive(Debug)]
pub(crate) struct SocketSet {
    slots: Vec<Option<SocketSlot>>,
    next_generation: u32,
}

impl SocketSet {
    /// A set holding only the unicast socket.
    pub fn new(unicast: Socket) -> Self {
        SocketSet {
            slots: vec![Some(SocketSlot {
                socket: unicast,
                group: None,
                generation: 0,
            })],
            next_generation: 1,
        }
    }

    /// The unicast (and multicast-sending) socket.
    pub fn unicast(&self) -> &SocketSlot {
        match &self.slots[0] {
            Some(slot) => slot,
            None => unreachable!("slot 0 always holds the unicast socket"),
        }
    }

    /// The socket in `index`, if any.
    pub fn get(&self, index: usize) -> Option<&SocketSlot> {
        self.slots.get(index).and_then(Option::as_ref)
    }

    /// Number of slots (occupied or not).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Iterates `(slot index, socket)` over occupied slots.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &SocketSlot)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// The slot of the multicast socket for `group`.
    pub fn find_group(&self, group: SocketAddrV4) -> Option<usize> {
        self.iter()
            .find(|(_, s)| s.group == Some(group))
            .map(|(i, _)| i)
    }

    /// Adds a multicast socket; returns its slot.
    pub fn insert(&mut self, socket: Socket, group: SocketAddrV4) -> usize {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = Some(SocketSlot {
            socket,
            group: Some(group),
            generation,
        });
        match self.slots.iter().skip(1).position(Option::is_none) {
            Some(free) => {
                self.slots[free + 1] = slot;
                free + 1
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        }
    }

    /// Removes a multicast socket (never slot 0) and returns it.
    pub fn remove(&mut self, index: usize) -> Option<SocketSlot> {
        if index == 0 {
            return None;
        }
        self.slots.get_mut(index).and_then(Option::take)
    }
}

/// What socket set-up found out about the kernel.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SocketFeatures {
    pub gso: bool,
    pub gro: bool,
    pub recv_buffer_bytes: u64,
    pub send_buffer_bytes: u64,
}

fn new_udp_socket() -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Opens, configures and binds the unicast socket; it is also the multicast sender.
pub(crate) fn open_unicast(config: &EngineConfig) -> io::Result<(Socket, SocketFeatures)> {
    let socket = new_udp_socket()?;
    // Multicast safety first: explicit interface and TTL before the socket can send anything.
    socket.set_multicast_if_v4(&config.multicast_interface)?;
    socket.set_multicast_ttl_v4(config.multicast_ttl)?;
    socket.set_multicast_loop_v4(config.multicast_loop)?;
    socket.set_multicast_all_v4(false)?;
    let (recv_buffer_bytes, send_buffer_bytes) =
        size_buffers(&socket, config.socket_buffer_bytes, true)?;
    socket.bind(&SockAddr::from(config.unicast_bind))?;
    let gso = config.gso && setsockopt_int(socket.as_raw_fd(), libc::SOL_UDP, UDP_SEGMENT, 0);
    let gro = config.gro && setsockopt_int(socket.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 1);
    Ok((
        socket,
        SocketFeatures {
            gso,
            gro,
            recv_buffer_bytes,
            send_buffer_bytes,
        },
    ))
}

/// Opens a receive socket for a multicast group: bound to `group` (so it sees only that
/// group's traffic), `SO_REUSEADDR` + `SO_REUSEPORT` (several members on one host each get a
/// copy), `IP_MULTICAST_ALL` off, joined on the configured interface. `gro` says whether to
/// turn on `UDP_GRO` (the caller already knows whether the kernel accepts it).
pub(crate) fn open_multicast(
    config: &EngineConfig,
    group: SocketAddrV4,
    gro: bool,
) -> io::Result<Socket> {
    if !group.ip().is_multicast() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{group} is not an IPv4 multicast address"),
        ));
    }
    let socket = new_udp_socket()?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_multicast_all_v4(false)?;
    socket.set_multicast_if_v4(&config.multicast_interface)?;
    socket.set_multicast_ttl_v4(config.multicast_ttl)?;
    socket.set_multicast_loop_v4(config.multicast_loop)?;
    size_buffers(&socket, config.socket_buffer_bytes, false)?;
    socket.bind(&SockAddr::from(group))?;
    socket.join_multicast_v4(group.ip(), &config.multicast_interface)?;
    if gro {
        setsockopt_int(socket.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 1);
    }
    Ok(socket)
}

/// Drops the membership explicitly (the socket is closed right after, but a kernel reference
/// held by an in-flight operation must not keep receiving the group).
pub(crate) fn leave_group(socket: &Socket, group: SocketAddrV4, interface: Ipv4Addr) {
    let _ = socket.leave_multicast_v4(group.ip(), &interface);
}

/// Sizes `SO_RCVBUF` (and `SO_SNDBUF` when `send`): `SO_*BUFFORCE` first, then the plain
/// option. Returns the effective sizes as reported by the kernel (which doubles the request).
fn size_buffers(socket: &Socket, bytes: usize, send: bool) -> io::Result<(u64, u64)> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let fd = socket.as_raw_fd();
    if !setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want) {
        socket.set_recv_buffer_size(bytes)?;
    }
    let recv = socket.recv_buffer_size()? as u64;
    let mut sent = 0;
    if send {
        if !setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want) {
            socket.set_send_buffer_size(bytes)?;
        }
        sent = socket.send_buffer_size()? as u64;
    }
    // The kernel stores (and reports) twice the granted size to account for its overhead.
    let honoured = (want as u64).saturating_mul(2);
    let clamped = recv < honoured || (send && sent < honoured);
    if clamped && !CLAMP_WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "vsync engine: socket buffers clamped by the kernel: asked {bytes} bytes, granted \
             SO_RCVBUF={} SO_SNDBUF={} (raise net.core.rmem_max/wmem_max or grant \
             CAP_NET_ADMIN); reported once per process",
            recv / 2,
            sent / 2
        );
    }
    Ok((recv, sent))
}

/// `setsockopt(fd, level, name, &value)` for an int option; `true` on success.
fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: `value` is a live c_int and the length passed is its size; `fd` is an open
    // socket owned by the caller. The kernel only reads the option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// A `sockaddr_in` for `addr`.
pub(crate) fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Decodes a `sockaddr_in`/`sockaddr_in6` from raw bytes (as written by the kernel into a
/// `msg_name` buffer of `len` valid bytes). `None` for anything else.
pub(crate) fn parse_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    match libc::c_int::from(family) {
        libc::AF_INET => {
            let octets: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(octets),
                port,
            )))
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
            let octets: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(bytes.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                octets.into(),
                port,
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

/// The `UDP_GRO` segment size in received control data, if present. Walks the `cmsghdr`
/// chain with bounds checks; never trusts a length it cannot verify.
pub(crate) fn gro_segment_size(control: &[u8]) -> Option<usize> {
    const HDR: usize = size_of::<libc::cmsghdr>();
    const ALIGN: usize = size_of::<usize>();
    let mut offset = 0usize;
    while offset + HDR <= control.len() {
        let len = usize::from_ne_bytes(control[offset..offset + ALIGN].try_into().ok()?);
        let level = i32::from_ne_bytes(
            control[offset + ALIGN..offset + ALIGN + 4]
                .try_into()
                .ok()?,
        );
        let kind = i32::from_ne_bytes(control[offset + ALIGN + 4..offset + HDR].try_into().ok()?);
        if len < HDR || offset + len > control.len() {
            return None;
        }
        if level == libc::SOL_UDP && kind == UDP_GRO && len >= HDR + 2 {
            let data = &control[offset + HDR..offset + len];
            let size = if data.len() >= 4 {
                i32::from_ne_bytes(data[..4].try_into().ok()?).max(0) as usize
            } else {
                u16::from_ne_bytes(data[..2].try_into().ok()?) as usize
            };
            return (size > 0).then_some(size);
        }
        offset += len.div_ceil(ALIGN) * ALIGN;
    }
    None
}

/// A `UDP_SEGMENT` control message, laid out exactly as `CMSG_SPACE(sizeof(u16))`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GsoCmsg {
    header: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

impl GsoCmsg {
    /// Space the message occupies (`msg_controllen`).
    pub const SPACE: usize = size_of::<GsoCmsg>();

    /// An empty message (segment size 0).
    pub fn new() -> Self {
        // SAFETY: cmsghdr is a plain C struct of integers; all-zero is a valid value.
        let mut header: libc::cmsghdr = unsafe { std::mem::zeroed() };
        header.cmsg_len = (size_of::<libc::cmsghdr>() + size_of::<u16>()) as _;
        header.cmsg_level = libc::SOL_UDP;
        header.cmsg_type = UDP_SEGMENT;
        GsoCmsg {
            header,
            segment: 0,
            _pad: [0; 6],
        }
    }

    /// Sets the segment size.
    pub fn set_segment(&mut self, segment: u16) {
        self.segment = segment;
    }
}

const _: () = assert!(GsoCmsg::SPACE == 24 && size_of::<libc::cmsghdr>() == 16);

/// Aligned receive control buffer.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct ControlBuf(pub [u8; CONTROL_CAPACITY]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmsg_parse_roundtrip_and_garbage() {
        let mut raw = [0u8; 40];
        let len = 20usize;
        raw[0..8].copy_from_slice(&len.to_ne_bytes());
        raw[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        raw[12..16].copy_from_slice(&UDP_GRO.to_ne_bytes());
        raw[16..20].copy_from_slice(&1400i32.to_ne_bytes());
        assert_eq!(gro_segment_size(&raw[..24]), Some(1400));
        // Bogus lengths never panic.
        raw[0..8].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(gro_segment_size(&raw), None);
        raw[0..8].copy_from_slice(&3usize.to_ne_bytes());
        assert_eq!(gro_segment_size(&raw), None);
        assert_eq!(gro_segment_size(&[1, 2, 3]), None);
    }

    #[test]
    fn sockaddr_roundtrip() {
        let addr = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 4242);
        let raw = sockaddr_in(addr);
        // SAFETY: sockaddr_in is a plain C struct; viewing it as bytes is fine.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const libc::sockaddr_in).cast::<u8>(),
                size_of::<libc::sockaddr_in>(),
            )
        };
        assert_eq!(parse_sockaddr(bytes), Some(SocketAddr::V4(addr)));
        assert_eq!(parse_sockaddr(&bytes[..3]), None);
    }
}
