//! Scaffolding shared by the `vsync` crate's integration tests: a free loopback port for a
//! test's private embedded oracle, a system on it, and bounded waiting.

#![allow(dead_code)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use vsync::System;

/// A loopback UDP port nobody uses right now (the test's own oracle port).
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A system whose embedded oracle is on `port` (the first system of a test starts it).
pub fn start(port: u16) -> System {
    System::builder()
        .oracle_port(port)
        .join_timeout(Duration::from_secs(30))
        .start()
        .expect("system starts")
}

/// Polls `f` every 5 ms until it holds; fails the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`wait_until`] with a 30 s limit.
pub fn wait_30s(what: &str, f: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(30), f)
}
