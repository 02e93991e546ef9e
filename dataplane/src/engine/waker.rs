//! [`Waker`]: the cross-thread "stop parking" signal, an `eventfd` the engine watches (a `Read`
//! SQE in the io_uring backend, a `ppoll` entry in the portable one).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Makes a parked [`crate::engine::Engine::poll`] return promptly. Cheap to clone; usable from
/// any thread. A wake-up that arrives while the engine is busy is not lost: the next park
/// returns at once.
#[derive(Clone, Debug)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    /// A new eventfd-backed waker (blocking descriptor: the engine only reads it when it is
    /// known to be readable, or through io_uring).
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant flags; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd: Arc::new(fd) })
    }

    /// Wakes the engine. Never blocks (the eventfd counter cannot realistically overflow) and
    /// never fails observably.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we keep open via the Arc.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// The descriptor.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Resets the counter. Only call when the descriptor is readable (it is blocking).
    pub(crate) fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }
}
