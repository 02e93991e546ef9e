//! State transfer, join refusal on signature mismatch, query timeouts, P2P.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vsync::query::QueryError;
use vsync::{Address, Group, MsgKind, NReplies, System, Timeout, TimeoutAction, VsyncError};

mod common;
use common::{free_port, start, wait_30s as wait_until};

const UPDATE: u32 = 0;
const SLOW: u32 = 1;
const NOTE: u32 = 2;

type Db = Arc<Mutex<Vec<i32>>>;
type Notes = Arc<Mutex<Vec<(Option<Address>, Option<MsgKind>, String)>>>;

/// A replicated list of i32 with state transfer.
fn replica(sys: &System, loads: Arc<Mutex<u32>>) -> (Group, Db) {
    let g = Group::new(sys, "state").unwrap();
    let db: Db = Arc::default();
    let d = db.clone();
    g.on(UPDATE, move |x: i32| d.lock().unwrap().push(x))
        .unwrap();
    let d = db.clone();
    g.make_checkpoint(move || {
        // Two chunks: the first half and the rest.
        let v = d.lock().unwrap().clone();
        let (a, b) = v.split_at(v.len() / 2);
        let enc = |s: &[i32]| s.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        vec![enc(a), enc(b)]
    })
    .unwrap();
    let d = db.clone();
    g.load_checkpoint(move |chunks| {
        *loads.lock().unwrap() += 1;
        let mut v = d.lock().unwrap();
        for c in chunks {
            v.extend(
                c.chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().unwrap())),
            );
        }
    })
    .unwrap();
    (g, db)
}

#[test]
fn joiners_receive_state_by_checkpoint() {
    let port = free_port();
    let sa = start(port);
    let la = Arc::new(Mutex::new(0));
    let (ga, dba) = replica(&sa, la.clone());
    ga.join().unwrap();
    for x in 0..25 {
        ga.ordered_send(UPDATE, (x,)).unwrap();
    }
    wait_until("25 updates at A", || dba.lock().unwrap().len() == 25);
    assert_eq!(*la.lock().unwrap(), 0, "the creator loads nothing");

    // Two joiners.
    let (sb, sc) = (start(port), start(port));
    let (lb, lc) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(0)));
    let (gb, dbb) = replica(&sb, lb.clone());
    let (gc, dbc) = replica(&sc, lc.clone());
    let tb = std::thread::spawn(move || {
        gb.join().unwrap();
        gb
    });
    gc.join().unwrap();
    let gb = tb.join().unwrap();
    // join() returns after the state is loaded.
    assert_eq!(*dbc.lock().unwrap(), (0..25).collect::<Vec<_>>());
    assert_eq!(*dbb.lock().unwrap(), (0..25).collect::<Vec<_>>());
    assert_eq!((*lb.lock().unwrap(), *lc.lock().unwrap()), (1, 1));
    wait_until("3 members", || {
        [&ga, &gb, &gc]
            .iter()
            .all(|g| g.view().is_some_and(|v| v.len() == 3))
    });
    // New updates reach everyone, in one order.
    for (i, g) in [&ga, &gb, &gc].iter().enumerate() {
        for x in 0..5 {
            g.ordered_send(UPDATE, (100 * (i as i32 + 1) + x,)).unwrap();
        }
    }
    wait_until("40 updates everywhere", || {
        [&dba, &dbb, &dbc]
            .iter()
            .all(|d| d.lock().unwrap().len() == 40)
    });
    let a = dba.lock().unwrap().clone();
    assert_eq!(a, *dbb.lock().unwrap());
    assert_eq!(a, *dbc.lock().unwrap());
    for s in [&sa, &sb, &sc] {
        s.shutdown().unwrap();
    }
}

#[test]
fn join_with_a_different_signature_is_refused() {
    let port = free_port();
    let (sa, sb) = (start(port), start(port));
    let ga = Group::new(&sa, "sig").unwrap();
    ga.on(UPDATE, |_a: i32, _b: i32| {}).unwrap();
    ga.join().unwrap();
    let gb = Group::new(&sb, "sig").unwrap();
    gb.on(UPDATE, |_a: String| {}).unwrap();
    let e = gb.join().unwrap_err();
    let VsyncError::Refused { group, reason } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(group, "sig");
    assert!(reason.contains("signature mismatch"), "{reason}");
    assert!(reason.contains("0: (i32, i32)"), "{reason}");
    assert!(reason.contains("0: (String)"), "{reason}");
    assert!(!gb.is_joined());
    assert!(matches!(
        gb.send(UPDATE, ("x",)),
        Err(VsyncError::NotJoined { .. })
    ));
    // Handlers are frozen once a join was attempted.
    assert!(matches!(
        gb.on(SLOW, || {}),
        Err(VsyncError::AlreadyJoined { .. })
    ));
    // join_existing of a group that does not exist.
    let gx = Group::new(&sb, "nonexistent").unwrap();
    let e = gx.join_existing().unwrap_err();
    assert!(e.to_string().contains("unknown group"), "{e}");
    // create of a group that exists.
    let gy = Group::new(&sb, "sig").unwrap();
    gy.on(UPDATE, |_a: i32, _b: i32| {}).unwrap();
    let e = gy.create().unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    sa.shutdown().unwrap();
    sb.shutdown().unwrap();
}

#[test]
fn query_timeouts_and_p2p() {
    let port = free_port();
    let (sa, sb) = (start(port), start(port));
    let notes: Notes = Arc::default();
    let mk = |sys: &System, slow: bool| {
        let g = Group::new(sys, "timeouts").unwrap();
        g.on(SLOW, move |x: i32| {
            if slow {
                std::thread::sleep(Duration::from_millis(1500));
            }
            x * 2
        })
        .unwrap();
        let n = notes.clone();
        let gc = g.clone();
        g.on(NOTE, move |s: String| {
            n.lock().unwrap().push((gc.sender(), gc.message_kind(), s))
        })
        .unwrap();
        g.join().unwrap();
        g
    };
    let ga = mk(&sa, false);
    let gb = mk(&sb, true);
    wait_until("2 members", || {
        [&ga, &gb]
            .iter()
            .all(|g| g.view().is_some_and(|v| v.len() == 2))
    });
    // Abort on timeout: B is too slow.
    let t = Timeout::new(Duration::from_millis(300), TimeoutAction::Abort);
    let started = Instant::now();
    let e = ga.query(NReplies::All, t, SLOW, (21,)).unwrap_err();
    assert!(
        matches!(&e, VsyncError::Query(QueryError::Timeout { got: 1, wanted: 2, missing }) if missing == &[sb.my_address()]),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1400));
    // Null reply on timeout: A's answer only.
    let t = Timeout::new(Duration::from_millis(300), TimeoutAction::NullReply);
    let r = ga.query(NReplies::All, t, SLOW, (5,)).unwrap();
    assert_eq!(r.decode::<i32>().unwrap(), [10]);
    assert_eq!(r.timed_out_as_null(), [sb.my_address()]);
    // MAJORITY of 2 is 2: with a generous timeout both answer.
    let t = Timeout::new(Duration::from_secs(10), TimeoutAction::Abort);
    let r = ga.query(NReplies::Majority, t, SLOW, (1,)).unwrap();
    assert_eq!(r.decode::<i32>().unwrap(), [2, 2]);

    // P2P: only B runs the handler, and sees A as the sender.
    ga.p2p_send(sb.my_address(), NOTE, ("hello".to_string(),))
        .unwrap();
    wait_until("the P2P note", || !notes.lock().unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        *notes.lock().unwrap(),
        [(
            Some(sa.my_address()),
            Some(MsgKind::P2p),
            "hello".to_string()
        )]
    );
    let e = ga
        .p2p_send(vsync::Address::new(1, 1), NOTE, ("x".to_string(),))
        .unwrap_err();
    assert!(matches!(e, VsyncError::NotMember { .. }));
    sa.shutdown().unwrap();
    sb.shutdown().unwrap();
    assert_eq!(sa.wait_forever(), VsyncError::ShutDown);
}
