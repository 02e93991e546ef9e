//! The threading rules of the manual's "Threads" section: a blocked handler is reported, a
//! member whose handler blocks past the stall limit takes the poison pill (and the group goes
//! on without it), and sends from inside handlers never deadlock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use vsync::{Group, System, VsyncError};

mod common;
use common::{free_port, wait_until};

const SLOW: u32 = 0;
const PING: u32 = 1;
const ECHO: u32 = 2;

#[test]
fn a_slow_handler_is_reported_once() {
    let sys = System::builder()
        .oracle_port(free_port())
        .handler_warning(Duration::from_millis(100))
        .delivery_stall_limit(None)
        .start()
        .unwrap();
    let g = Group::new(&sys, "slow").unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    g.on(SLOW, move |ms: u64| {
        std::thread::sleep(Duration::from_millis(ms));
        d.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    g.join().unwrap();
    g.send(SLOW, (400u64,)).unwrap();
    g.send(SLOW, (1u64,)).unwrap();
    wait_until("both handlers", Duration::from_secs(10), || {
        done.load(Ordering::Relaxed) == 2
    });
    assert_eq!(sys.blocked_handler_reports(), 1, "the 400 ms handler, once");
    sys.shutdown().unwrap();
}

#[test]
fn a_stuck_member_takes_the_poison_pill_and_the_group_goes_on() {
    let port = free_port();
    let start = || {
        System::builder()
            .oracle_port(port)
            .handler_warning(Duration::from_millis(100))
            .delivery_stall_limit(Some(Duration::from_millis(600)))
            .start()
            .unwrap()
    };
    let (sa, sb) = (start(), start());
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let ga = Group::new(&sa, "stuck").unwrap();
    ga.on(SLOW, |_ms: u64| {}).unwrap();
    ga.join().unwrap();
    let gb = Group::new(&sb, "stuck").unwrap();
    let r = release_rx.clone();
    // B's handler blocks until the test releases it (after B has been excluded).
    gb.on(SLOW, move |_ms: u64| {
        let _ = r.lock().unwrap().recv_timeout(Duration::from_secs(30));
    })
    .unwrap();
    gb.join().unwrap();
    wait_until("view 2", Duration::from_secs(10), || {
        ga.view().is_some_and(|v| v.len() == 2)
    });
    let b = sb.my_address();
    ga.send(SLOW, (0u64,)).unwrap();
    wait_until("B poisoned", Duration::from_secs(20), || !sb.is_active());
    match gb.send(SLOW, (0u64,)) {
        Err(VsyncError::Poisoned(why)) => assert!(why.contains("\"stuck\""), "{why}"),
        other => panic!("expected the poison pill, got {other:?}"),
    }
    wait_until("A's view without B", Duration::from_secs(20), || {
        ga.view()
            .is_some_and(|v| v.len() == 1 && v.failed.contains(&b))
    });
    ga.send(SLOW, (0u64,)).unwrap();
    let _ = release_tx.send(());
    sa.shutdown().unwrap();
}

#[test]
fn sends_and_queries_from_handlers_do_not_deadlock() {
    let port = free_port();
    let (sa, sb) = (
        System::builder().oracle_port(port).start().unwrap(),
        System::builder().oracle_port(port).start().unwrap(),
    );
    let echoes = Arc::new(AtomicU64::new(0));
    let mk = |sys: &System| {
        let g = Group::new(sys, "chatty").unwrap();
        let me = g.clone();
        // Every PING is answered, from inside the handler, by a burst of ordered ECHOs.
        g.on(PING, move |n: u64| {
            if me.my_rank() == Some(0) {
                for i in 0..n {
                    me.ordered_send(ECHO, (i,)).unwrap();
                }
            }
        })
        .unwrap();
        let e = echoes.clone();
        g.on(ECHO, move |_i: u64| {
            e.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        g
    };
    let (ga, gb) = (mk(&sa), mk(&sb));
    ga.join().unwrap();
    gb.join().unwrap();
    wait_until("view 2", Duration::from_secs(10), || {
        gb.view().is_some_and(|v| v.len() == 2)
    });
    for _ in 0..10 {
        gb.send(PING, (500u64,)).unwrap();
    }
    wait_until(
        "all echoes at both members",
        Duration::from_secs(60),
        || echoes.load(Ordering::Relaxed) == 2 * 10 * 500,
    );
    sb.shutdown().unwrap();
    sa.shutdown().unwrap();
}

#[test]
fn a_query_reply_handed_to_another_thread() {
    use vsync::{NReplies, Reply, Timeout};
    const DOUBLE: u32 = 3;
    const FORGET: u32 = 4;
    const REFUSE: u32 = 5;
    let sys = System::builder().oracle_port(free_port()).start().unwrap();
    let g = Group::new(&sys, "deferred").unwrap();
    let me = g.clone();
    g.on(DOUBLE, move |n: u64| {
        let reply = me.defer_reply().unwrap();
        assert!(me.defer_reply().is_err(), "only once");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            reply.send(n * 2);
        });
        // The handler's own return value is not sent once the reply was deferred.
        7u64
    })
    .unwrap();
    let me = g.clone();
    g.on(FORGET, move || {
        let reply = me.defer_reply().unwrap();
        std::thread::spawn(move || drop(reply));
    })
    .unwrap();
    let me = g.clone();
    g.on(REFUSE, move || {
        let reply = me.defer_reply().unwrap();
        std::thread::spawn(move || reply.send(Reply::abort("no")));
    })
    .unwrap();
    g.join().unwrap();
    assert!(g.defer_reply().is_err(), "outside a handler");
    let r: Vec<u64> = g
        .query(NReplies::All, Timeout::default(), DOUBLE, (21u64,))
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(r, vec![42]);
    let r = g
        .query(NReplies::All, Timeout::default(), FORGET, ())
        .unwrap();
    assert_eq!(
        (r.len(), r.nulls()),
        (0, 1),
        "a dropped handle is a NullReply"
    );
    assert!(matches!(
        g.query(NReplies::All, Timeout::default(), REFUSE, ()),
        Err(VsyncError::Query(_))
    ));
    sys.shutdown().unwrap();
}

#[test]
fn p2p_has_its_own_delivery_thread_and_handlers_never_overlap() {
    use std::sync::atomic::AtomicI64;
    const MC: u32 = 6;
    const PP: u32 = 7;
    let port = free_port();
    let (sa, sb) = (
        System::builder().oracle_port(port).start().unwrap(),
        System::builder().oracle_port(port).start().unwrap(),
    );
    type Seen = Arc<Mutex<Vec<(u32, String)>>>;
    // Per process: handlers running now, overlaps seen, (code, thread name) of each run.
    let mk = |sys: &System| -> (Group, Arc<AtomicU64>, Seen) {
        let inside = Arc::new(AtomicI64::new(0));
        let overlaps = Arc::new(AtomicU64::new(0));
        let threads: Seen = Arc::default();
        let g = Group::new(sys, "two-threads").unwrap();
        for code in [MC, PP] {
            let (inside, overlaps, threads) = (inside.clone(), overlaps.clone(), threads.clone());
            g.on(code, move |_i: u64| {
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
                let name = std::thread::current().name().unwrap_or("").to_string();
                threads.lock().unwrap().push((code, name));
                inside.fetch_sub(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        (g, overlaps, threads)
    };
    let (ga, overlaps, threads) = mk(&sa);
    ga.join().unwrap();
    let (gb, _, _) = mk(&sb);
    gb.join().unwrap();
    wait_until("view 2", Duration::from_secs(10), || {
        ga.view().is_some_and(|v| v.len() == 2)
    });
    let a = sa.my_address();
    // A's handlers: B multicasts (delivered at both) and P2P-sends to A.
    let before = threads.lock().unwrap().len();
    for i in 0..100u64 {
        gb.send(MC, (i,)).unwrap();
        gb.p2p_send(a, PP, (i,)).unwrap();
    }
    wait_until("all handlers", Duration::from_secs(30), || {
        threads.lock().unwrap().len() >= before + 200
    });
    std::thread::sleep(Duration::from_millis(50));
    let seen = threads.lock().unwrap().clone();
    assert_eq!(
        overlaps.load(Ordering::Relaxed),
        0,
        "handlers of one process ran concurrently"
    );
    for (code, name) in &seen {
        match *code {
            MC => assert!(name.starts_with("vsync-deliver-"), "{name}"),
            _ => assert!(name.starts_with("vsync-p2p-"), "{name}"),
        }
    }
    sb.shutdown().unwrap();
    sa.shutdown().unwrap();
}
