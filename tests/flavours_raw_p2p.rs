//! RawSend, RawP2PSend, RawQuery, P2PQuery and RawP2PQuery between in-process members
//! (three `System`s sharing an embedded oracle on a test-private loopback port).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vsync::query::QueryError;
use vsync::{Address, Group, MsgKind, NReplies, Reply, System, Timeout, TimeoutAction, VsyncError};

mod common;
use common::{free_port, start, wait_until};

/// (i) — logged with sender and kind.
const NOTE: u32 = 0;
/// (x) -> x + 1000 * rank.
const ASK: u32 = 1;
/// (ms) -> sleeps, then replies 1.
const SLOW: u32 = 2;
/// (bytes) — accepts a payload of any size.
const BLOB: u32 = 3;

type Log = Arc<Mutex<Vec<(Address, MsgKind, i32)>>>;

struct Member {
    sys: System,
    g: Group,
    log: Log,
}

fn member(sys: System, name: &str) -> Member {
    let g = Group::new(&sys, name).unwrap();
    let log: Log = Arc::default();
    let (l, gc) = (log.clone(), g.clone());
    g.on(NOTE, move |i: i32| {
        let k = gc.message_kind().unwrap();
        l.lock().unwrap().push((gc.sender().unwrap(), k, i));
    })
    .unwrap();
    let gc = g.clone();
    g.on(ASK, move |x: i32| -> Reply {
        if x < 0 {
            return Reply::abort("negative");
        }
        Reply::value(&(x + 1000 * gc.my_rank().unwrap() as i32))
    })
    .unwrap();
    g.on(SLOW, |ms: u64| {
        std::thread::sleep(Duration::from_millis(ms));
        1i32
    })
    .unwrap();
    g.on(BLOB, |_b: Vec<u8>| {}).unwrap();
    Member { sys, g, log }
}

fn three(name: &str) -> Vec<Member> {
    let port = free_port();
    let ms: Vec<Member> = (0..3).map(|_| member(start(port), name)).collect();
    for m in &ms {
        m.g.join().unwrap();
    }
    wait_until("3 members", Duration::from_secs(30), || {
        ms.iter().all(|m| m.g.view().is_some_and(|v| v.len() == 3))
    });
    ms
}

fn entries(m: &Member, from: Address, kind: MsgKind) -> Vec<i32> {
    m.log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.0 == from && e.1 == kind)
        .map(|e| e.2)
        .collect()
}

fn no_duplicates(v: &[i32]) -> bool {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.dedup();
    s.len() == v.len()
}

#[test]
fn raw_sends_are_best_effort_without_duplicates() {
    let ms = three("raw");
    let a = ms[0].sys.my_address();
    let b = ms[1].sys.my_address();
    const N: i32 = 200;
    for i in 0..N {
        ms[0].g.raw_send(NOTE, (i,)).unwrap();
        ms[1]
            .g
            .raw_p2p_send(ms[2].sys.my_address(), NOTE, (i,))
            .unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // The sender delivers its own RawSends locally, all of them.
    wait_until("self-delivery", Duration::from_secs(10), || {
        entries(&ms[0], a, MsgKind::Raw).len() == N as usize
    });
    // Others: at least some arrive (loopback rarely loses any), never twice.
    wait_until("some raw deliveries", Duration::from_secs(10), || {
        !entries(&ms[1], a, MsgKind::Raw).is_empty()
            && !entries(&ms[2], a, MsgKind::Raw).is_empty()
            && !entries(&ms[2], b, MsgKind::RawP2p).is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    for m in &ms {
        for (from, kind) in [(a, MsgKind::Raw), (b, MsgKind::RawP2p)] {
            let got = entries(m, from, kind);
            assert!(got.len() <= N as usize);
            assert!(no_duplicates(&got), "duplicates of {from} {kind:?}");
            assert!(got.iter().all(|i| (0..N).contains(i)));
        }
    }
    // RawP2PSend reaches only its destination.
    assert!(entries(&ms[0], b, MsgKind::RawP2p).is_empty());
    assert!(entries(&ms[1], b, MsgKind::RawP2p).is_empty());
    let s = ms[2].sys.flavour_stats().unwrap();
    assert!(s.raw_delivered > 0, "{s:?}");
    assert_eq!(s.raw_malformed, 0, "{s:?}");
    let s = ms[0].sys.flavour_stats().unwrap();
    assert!(s.raw_sent + s.raw_unsent >= N as u64, "{s:?}");

    // One datagram at most: an oversize raw message is refused at the caller.
    let big = vec![7u8; 64 * 1024];
    for r in [
        ms[0].g.raw_send(BLOB, (big.clone(),)),
        ms[0].g.raw_p2p_send(b, BLOB, (big.clone(),)),
    ] {
        match r {
            Err(VsyncError::Send(m)) => assert!(m.contains("datagram"), "{m}"),
            other => panic!("oversize raw send: {other:?}"),
        }
    }
    let t = Timeout::new(Duration::from_secs(1), TimeoutAction::NullReply);
    assert!(matches!(
        ms[0].g.raw_p2p_query(b, t, BLOB, (big.clone(),)),
        Err(VsyncError::Send(_))
    ));
    // The same message is fine reliably, and a small blob fits raw.
    ms[0].g.send(BLOB, (big,)).unwrap();
    ms[0].g.raw_send(BLOB, (vec![1u8; 512],)).unwrap();
    // A non-member destination is refused.
    let stranger = Address::new(4_000_000_000, 1);
    assert!(matches!(
        ms[0].g.raw_p2p_send(stranger, NOTE, (1i32,)),
        Err(VsyncError::NotMember { .. })
    ));
    for m in &ms {
        let _ = m.sys.shutdown();
    }
}

#[test]
fn p2p_and_raw_queries() {
    let ms = three("p2pq");
    let addr: Vec<Address> = ms.iter().map(|m| m.sys.my_address()).collect();
    let t = Timeout::new(Duration::from_secs(20), TimeoutAction::Abort);

    // P2PQuery: exactly one reply, from the member asked; to oneself too.
    for (from, to) in [(0, 2), (2, 0), (1, 1)] {
        let r = ms[from].g.p2p_query(addr[to], t, ASK, (5i32,)).unwrap();
        assert_eq!(r.decode::<i32>().unwrap(), [5 + 1000 * to as i32]);
        assert_eq!(r.senders().collect::<Vec<_>>(), [addr[to]]);
        assert_eq!(r.raw().len(), 1);
        assert_eq!(
            r.invoke(|v: Vec<(i32,)>| v[0].0).unwrap(),
            5 + 1000 * to as i32
        );
    }
    // An AbortReply fails it.
    match ms[0].g.p2p_query(addr[1], t, ASK, (-1i32,)) {
        Err(VsyncError::Query(QueryError::Aborted { by, reason })) => {
            assert_eq!(by, addr[1]);
            assert_eq!(reason, "negative");
        }
        other => panic!("abort: {other:?}"),
    }
    // A member that does not answer in time: the timeout action applies.
    let quick = Timeout::new(Duration::from_millis(200), TimeoutAction::Abort);
    assert!(matches!(
        ms[0].g.p2p_query(addr[1], quick, SLOW, (1500u64,)),
        Err(VsyncError::Query(QueryError::Timeout { .. }))
    ));
    let quick_null = Timeout::new(Duration::from_millis(200), TimeoutAction::NullReply);
    let r = ms[0]
        .g
        .p2p_query(addr[1], quick_null, SLOW, (1500u64,))
        .unwrap();
    assert!(r.is_empty());
    assert_eq!(r.timed_out_as_null(), [addr[1]]);

    // RawP2PQuery and RawQuery (ALL): loopback rarely loses anything, but they are
    // unreliable, so a round trip is retried a few times; a lost datagram shows up as the
    // timeout action (null replies here), never as an error or a duplicate.
    let rt = Timeout::new(Duration::from_millis(500), TimeoutAction::NullReply);
    let mut ok = false;
    for _ in 0..20 {
        let r = ms[1].g.raw_p2p_query(addr[2], rt, ASK, (9i32,)).unwrap();
        assert!(r.len() <= 1 && r.duplicates() == 0);
        if r.len() == 1 {
            assert_eq!(r.decode::<i32>().unwrap(), [2009]);
            assert_eq!(r.senders().collect::<Vec<_>>(), [addr[2]]);
            ok = true;
            break;
        }
        assert_eq!(r.timed_out_as_null(), [addr[2]]);
    }
    assert!(ok, "no RawP2PQuery round trip in 20 tries");
    let mut ok = false;
    for _ in 0..20 {
        let r = ms[0].g.raw_query(NReplies::All, rt, ASK, (3i32,)).unwrap();
        assert!(r.len() <= 3 && r.duplicates() == 0);
        if r.len() == 3 {
            let mut v = r.decode::<i32>().unwrap();
            v.sort_unstable();
            assert_eq!(v, [3, 1003, 2003]);
            ok = true;
            break;
        }
    }
    assert!(ok, "no complete RawQuery in 20 tries");
    // A raw query nobody can answer in time ends by its timeout action.
    let raw_abort = Timeout::new(Duration::from_millis(200), TimeoutAction::Abort);
    assert!(matches!(
        ms[0].g.raw_p2p_query(addr[2], raw_abort, SLOW, (1500u64,)),
        Err(VsyncError::Query(QueryError::Timeout { .. }))
    ));
    let r = ms[0]
        .g
        .raw_query(NReplies::Majority, quick_null, SLOW, (1500u64,))
        .unwrap();
    // The caller's own copy is answered only after its handler sleeps: nobody in time.
    assert!(r.is_empty());

    // P2PQuery to a member that is leaving while the query waits: no reply (empty result,
    // the member listed as gone); to a member that has left: NotMember.
    let leaver = ms[2].g.clone();
    let asker = ms[0].g.clone();
    let target = addr[2];
    let q = std::thread::spawn(move || {
        let t = Timeout::new(Duration::from_secs(30), TimeoutAction::Abort);
        asker.p2p_query(target, t, SLOW, (6000u64,))
    });
    // Let the request reach the target's handler, then leave.
    std::thread::sleep(Duration::from_millis(500));
    leaver.leave().unwrap();
    let r = q.join().unwrap().unwrap();
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(r.crashed(), [target]);
    wait_until("2 members", Duration::from_secs(30), || {
        ms[..2]
            .iter()
            .all(|m| m.g.view().is_some_and(|v| v.len() == 2))
    });
    assert!(matches!(
        ms[0].g.p2p_query(target, t, ASK, (1i32,)),
        Err(VsyncError::NotMember { member }) if member == target
    ));
    assert!(matches!(
        ms[0].g.raw_p2p_query(target, t, ASK, (1i32,)),
        Err(VsyncError::NotMember { .. })
    ));
    // The survivors still answer.
    let r = ms[0].g.p2p_query(addr[1], t, ASK, (2i32,)).unwrap();
    assert_eq!(r.decode::<i32>().unwrap(), [1002]);
    for m in &ms {
        let _ = m.sys.shutdown();
    }
}
