//! The manual's polymorphism example ("Groups" section): two handlers share the request code
//! `UPDATE` with different argument signatures, `(String, i32)` and `(i32, i32)`; each
//! multicast runs the handler whose signature matches. Arguments that match no handler fail
//! at the sender with an error naming the signatures expected.
//!
//! ```text
//! cargo run -p vsync --example polymorphic
//! ```
//!
//! (Start more copies at the same time and every running copy receives every multicast.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vsync::{Group, System, VsyncError};

/// The request code both handlers share.
const UPDATE: u32 = 1;

fn main() -> Result<(), VsyncError> {
    let sys = System::start()?;
    let g = Group::new(&sys, "some name")?;
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    g.on(UPDATE, move |name: String, val: i32| {
        println!("Update {name}, new value {val}");
        s.fetch_add(1, Ordering::Relaxed);
    })?;
    let s = seen.clone();
    g.on(UPDATE, move |id: i32, val: i32| {
        println!("Id-based update {id}, new value {val}");
        s.fetch_add(1, Ordering::Relaxed);
    })?;
    g.join()?;

    // Now send some multicasts.
    for n in 0..10 {
        g.send(UPDATE, (format!("User number {n}"), n * 100))?;
    }
    for n in 10..20 {
        g.send(UPDATE, (n, n * 100))?;
    }
    // A signature no handler has: refused at the sender, naming what is expected.
    match g.send(UPDATE, (1.5f64,)) {
        Err(e) => println!("as expected: {e}"),
        Ok(()) => println!("unexpected: a (f64,) UPDATE was accepted"),
    }
    let t = Instant::now();
    while seen.load(Ordering::Relaxed) < 20 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("{} updates delivered here", seen.load(Ordering::Relaxed));
    sys.shutdown()
}
