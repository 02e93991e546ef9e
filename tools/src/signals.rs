//! SIGINT / SIGTERM / SIGHUP → a process-wide "please stop" flag.
//!
//! The lab tools create network namespaces that must be removed on every exit path.
//! Rust runs `Drop` on normal return and on panic (unwinding), but a signal's default
//! action kills the process without unwinding. [`install`] replaces the default action
//! with a handler that only sets an atomic flag; long-running loops poll [`stop_requested`]
//! and return normally, so the owners' `Drop` impls tear everything down.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: two atomic stores.
    SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the flag-setting handler for SIGINT, SIGTERM and SIGHUP (idempotent).
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler only touches
        // atomics, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// True once a termination signal arrived (or [`request_stop`] was called).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The number of the last termination signal received, if any.
pub fn last_signal() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// The flag itself, for loops that take an `&AtomicBool` stop signal.
pub fn flag() -> &'static AtomicBool {
    &STOP
}

/// Sets the stop flag programmatically (e.g. from a watchdog).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
