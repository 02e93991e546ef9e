//! [`EngineStats`]: the engine's counters and the socket features it ended up with.

/// Counters kept by an [`crate::engine::Engine`]. All counts are since the engine was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Datagrams handed to the kernel successfully (each fan-out copy and each GSO segment
    /// counts as one).
    pub datagrams_sent: u64,
    /// Datagrams passed to `Protocol::handle_datagram` (each GRO segment counts as one).
    pub datagrams_received: u64,
    /// Received datagrams dropped by the configured loss injection (`rx_loss`).
    pub injected_drops: u64,
    /// Payload bytes of `datagrams_sent`.
    pub bytes_sent: u64,
    /// Payload bytes of `datagrams_received`.
    pub bytes_received: u64,
    /// Send operations issued: `sendmmsg` calls (portable) or `SendMsg` SQEs (io_uring).
    pub send_syscalls: u64,
    /// Receive-side kernel entries: `recvmmsg` calls (portable) or `io_uring_enter` calls of
    /// any kind (io_uring, where one enter both submits and reaps).
    pub recv_syscalls: u64,
    /// Successful `UDP_SEGMENT` sends carrying two or more datagrams.
    pub gso_batches: u64,
    /// Received buffers that carried two or more datagrams coalesced by `UDP_GRO`.
    pub gro_batches: u64,
    /// Datagrams dropped because the kernel refused to send them (other than `EAGAIN`/
    /// `ENOBUFS`, which keep them for the next cycle), or because the protocol reported a
    /// length longer than its buffer.
    pub send_errors: u64,
    /// Times a send hit a full socket buffer (`EAGAIN`/`ENOBUFS`); the unsent datagrams were
    /// kept and retried on a later cycle.
    pub send_retries: u64,
    /// Receive failures reported by the kernel (other than "no data" and buffer exhaustion),
    /// and received messages whose header could not be parsed.
    pub recv_errors: u64,
    /// Datagrams (or fan-out copies) not sent because the destination is not in the
    /// [`crate::engine::AddressBook`] (or has no IPv4 address).
    pub no_route: u64,
    /// Received datagrams dropped because they were longer than the receive buffer
    /// (`MSG_TRUNC`).
    pub truncated: u64,
    /// io_uring: multishot receives that ended because the provided-buffer ring ran dry
    /// (`ENOBUFS`) and were re-armed after recycling.
    pub enobufs_rearms: u64,
    /// io_uring: multishot receives re-armed for any reason (includes `enobufs_rearms`).
    pub recv_rearms: u64,
    /// Times `Protocol::handle_timeout` ran.
    pub timeouts: u64,
    /// Times `poll` blocked in the kernel (idle strategy `Park`).
    pub parks: u64,
    /// Times the [`crate::engine::Waker`] was observed to have fired.
    pub wakeups: u64,
    /// Times GSO was switched off at run time because a `UDP_SEGMENT` send failed with `EIO`
    /// or `EINVAL` (no checksum offload on the route); those datagrams were re-sent one by one.
    pub gso_fallbacks: u64,
    /// Whether GSO is in use now (config asked for it and the kernel accepts it).
    pub gso_enabled: bool,
    /// Whether `UDP_GRO` is on for the receiving sockets.
    pub gro_enabled: bool,
    /// Effective `SO_RCVBUF` of the unicast socket, as the kernel reports it (twice the size
    /// granted: the kernel doubles it for bookkeeping overhead).
    pub recv_buffer_bytes: u64,
    /// Effective `SO_SNDBUF` of the unicast socket, as the kernel reports it (doubled likewise).
    pub send_buffer_bytes: u64,
}
