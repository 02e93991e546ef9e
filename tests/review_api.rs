//! Regression tests from the review of the programming-model code (client re-homing,
//! Terminate from a handler, ...). In-process members sharing an embedded oracle on a
//! test-private loopback port.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use vsync::{Client, Group, System, Timeout, TimeoutAction, VsyncError};

mod common;
use common::{free_port, start, wait_until};

const WHO: u32 = 0;

/// A member of "svc" that answers WHO with `id`.
fn svc_member(sys: &System, id: u32) -> Group {
    let g = Group::new(sys, "svc").unwrap();
    g.on(WHO, move |_x: u32| id).unwrap();
    g.allow_client_requests(WHO).unwrap();
    g.join().unwrap();
    g
}

fn who(c: &Client) -> Result<u32, VsyncError> {
    let r = c.p2p_query(Timeout::millis(10_000, TimeoutAction::Abort), WHO, (7u32,))?;
    let v: Vec<u32> = r.decode()?;
    assert_eq!(v.len(), 1, "one reply");
    Ok(v[0])
}

/// The client's representative leaves the group gracefully while its process lives on:
/// the client must be re-homed to a remaining member (the module docs: "the representative
/// left, failed or is partitioned away"), not fail with "not a member of the group".
#[test]
fn client_is_rehomed_when_its_representative_leaves_but_lives_on() {
    let port = free_port();
    let s0 = start(port);
    let (s1, s2) = (start(port), start(port));
    let g1 = svc_member(&s1, 1);
    let g2 = svc_member(&s2, 2);
    wait_until("both members", Duration::from_secs(30), || {
        g1.view().is_some_and(|v| v.len() == 2)
    });
    let c = Client::new(&s0, "svc").unwrap();
    let first = who(&c).expect("first query");
    let (rep, other) = if first == 1 { (&g1, &g2) } else { (&g2, &g1) };
    rep.leave().expect("the representative leaves");
    wait_until("the view without it", Duration::from_secs(30), || {
        other.view().is_some_and(|v| v.len() == 1)
    });
    let second = who(&c).expect("the client is re-homed, not refused");
    assert_ne!(second, first, "answered by the remaining member");
    for s in [&s1, &s2, &s0] {
        let _ = s.shutdown();
    }
}

/// `terminate()` called from one of the group's own handlers used to wait for the delivery
/// thread — the caller's own thread — to see the end: a stall for the whole join timeout.
#[test]
fn terminate_from_inside_a_handler_returns_promptly() {
    const END: u32 = 1;
    let port = free_port();
    let sys = start(port);
    let g = Group::new(&sys, "ends-itself").unwrap();
    let (tx, rx) = mpsc::channel();
    let h = g.clone();
    g.on(END, move |_x: u32| {
        let t = Instant::now();
        let r = h.terminate();
        let _ = tx.send((r, t.elapsed()));
    })
    .unwrap();
    g.join().unwrap();
    g.send(END, (1u32,)).unwrap();
    let (r, took) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the handler finishes");
    r.expect("terminate succeeds");
    assert!(took < Duration::from_secs(5), "terminate took {took:?}");
    wait_until("the group to end", Duration::from_secs(10), || {
        !g.is_joined()
    });
    let _ = sys.shutdown();
}

/// `set_checkpoint_interval`: the periodic checkpoint used to be written only when the
/// delivery thread sat idle for the rest of the interval, so a steady stream of messages (the
/// queue never empty) starved it: the file kept the state of before the stream.
#[test]
fn periodic_checkpoints_are_written_under_a_steady_stream() {
    use std::sync::{Arc, Mutex};
    use vsync::checkpoint_file::CheckpointFile;
    const ADD: u32 = 0;
    let dir = std::env::temp_dir().join(format!("vsync-review-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("busy.ckpt");
    let port = free_port();
    let sys = start(port);
    let g = Group::new(&sys, "busy").unwrap();
    let count = Arc::new(Mutex::new(0u64));
    let c = count.clone();
    g.on(ADD, move |_x: u32| {
        std::thread::sleep(Duration::from_millis(2));
        *c.lock().unwrap() += 1;
    })
    .unwrap();
    let c = count.clone();
    g.make_checkpoint(move || vec![c.lock().unwrap().to_le_bytes().to_vec()])
        .unwrap();
    let c = count.clone();
    g.load_checkpoint(move |chunks| {
        *c.lock().unwrap() = u64::from_le_bytes(chunks[0][..8].try_into().unwrap())
    })
    .unwrap();
    g.persistent(&path).unwrap();
    g.join().unwrap();
    g.set_checkpoint_interval(Some(Duration::from_millis(50)))
        .unwrap();
    const N: u64 = 1000;
    for _ in 0..N {
        g.send(ADD, (1u32,)).unwrap();
    }
    // Half-way through the stream the queue is still long: checkpoints were due ~10 times.
    wait_until("half the stream", Duration::from_secs(30), || {
        *count.lock().unwrap() >= N / 2
    });
    let busy = *count.lock().unwrap() < N;
    let saved = CheckpointFile::new(&path)
        .load()
        .unwrap()
        .map(|c| u64::from_le_bytes(c[0][..8].try_into().unwrap()))
        .unwrap_or(0);
    assert!(busy, "the stream ended too soon for this test");
    assert!(saved > 0, "no periodic checkpoint during the stream");
    let _ = sys.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Joining a group a second time from the same process (a second `Group` object with the
/// same name) is refused with `AlreadyJoined` — and used to replace the joined group's
/// SafeSend state on the way, so its SafeSends (and the OrderedSends behind them) stalled.
#[test]
fn a_refused_second_join_leaves_the_joined_groups_safe_sends_alone() {
    use std::sync::{Arc, Mutex};
    const NOTE: u32 = 0;
    let port = free_port();
    let sys = start(port);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let g = Group::new(&sys, "twice").unwrap();
    let s = seen.clone();
    g.on(NOTE, move |x: u32| s.lock().unwrap().push(x)).unwrap();
    g.join().unwrap();
    g.safe_send(NOTE, (1u32,)).unwrap();
    wait_until("the first SafeSend", Duration::from_secs(10), || {
        seen.lock().unwrap().len() == 1
    });
    let again = Group::new(&sys, "twice").unwrap();
    again.on(NOTE, |_x: u32| {}).unwrap();
    assert!(matches!(
        again.join(),
        Err(VsyncError::AlreadyJoined { .. })
    ));
    g.safe_send(NOTE, (2u32,)).unwrap();
    g.ordered_send(NOTE, (3u32,)).unwrap();
    wait_until(
        "the later SafeSend and OrderedSend",
        Duration::from_secs(10),
        || seen.lock().unwrap().len() == 3,
    );
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
    let _ = sys.shutdown();
}

/// Threads of this process whose name starts with `prefix` (Linux truncates names to 15
/// bytes).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with(prefix))
        .count()
}

/// A refused join used to leave its delivery thread waiting forever (the group object held
/// the thread's channel and the thread held the group object).
#[test]
fn a_refused_join_does_not_leak_its_delivery_thread() {
    let port = free_port();
    let sys = start(port);
    let g = Group::new(&sys, "leaky").unwrap();
    g.on(0, |_x: u32| {}).unwrap();
    g.join().unwrap();
    for _ in 0..3 {
        let again = Group::new(&sys, "leaky").unwrap();
        again.on(0, |_x: u32| {}).unwrap();
        assert!(again.join().is_err());
    }
    wait_until(
        "refused joins' threads to end",
        Duration::from_secs(10),
        || threads_named("vsync-deliver-l") == 1,
    );
    let _ = sys.shutdown();
}
