//! In-process group tests: several `System`s (members) in one process, sharing an embedded
//! oracle on a test-private loopback port.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vsync::{Address, Group, NReplies, Reply, System, Timeout, TimeoutAction, View, VsyncError};

mod common;
use common::{free_port, start, wait_until};

const UPDATE: u32 = 0;
const LOOKUP: u32 = 1;

type Log = Arc<Mutex<Vec<(Address, i32, i32)>>>;

/// One member: logs UPDATEs (sender, a, b) and answers LOOKUP with the log length.
fn member(sys: &System, name: &str, views: Arc<Mutex<Vec<View>>>) -> (Group, Log) {
    let g = Group::new(sys, name).unwrap();
    let log: Log = Arc::default();
    let l = log.clone();
    let gc = g.clone();
    g.on(UPDATE, move |a: i32, b: i32| {
        l.lock().unwrap().push((gc.sender().unwrap(), a, b));
    })
    .unwrap();
    let l = log.clone();
    g.on(LOOKUP, move |x: i32| -> Reply {
        match x {
            -1 => Reply::abort("negative lookups are refused"),
            -2 => Reply::None,
            _ => Reply::value(&(l.lock().unwrap().len() as i32 + x)),
        }
    })
    .unwrap();
    g.on_view(move |v| views.lock().unwrap().push(v.clone()))
        .unwrap();
    (g, log)
}

#[test]
fn three_members_fifo_total_order_queries_and_leave() {
    let port = free_port();
    let systems: Vec<System> = (0..3).map(|_| start(port)).collect();
    // One process: the embedded oracle is shared by its three systems.
    assert!(systems.iter().all(|s| s.hosts_oracle()));
    let views: Vec<Arc<Mutex<Vec<View>>>> = (0..3).map(|_| Arc::default()).collect();
    let members: Vec<(Group, Log)> = systems
        .iter()
        .zip(&views)
        .map(|(s, v)| member(s, "basic", v.clone()))
        .collect();
    // Joins (the first creates the group: Isis² Join).
    for (g, _) in &members {
        g.join().unwrap();
    }
    wait_until("3 members", Duration::from_secs(20), || {
        members
            .iter()
            .all(|(g, _)| g.view().is_some_and(|v| v.len() == 3))
    });
    let ranks: Vec<usize> = members.iter().map(|(g, _)| g.my_rank().unwrap()).collect();
    assert_eq!(ranks, [0, 1, 2]);

    // Every member: 20 Sends (FIFO) interleaved with 20 OrderedSends.
    const N: i32 = 20;
    for i in 0..N {
        for (r, (g, _)) in members.iter().enumerate() {
            g.send(UPDATE, (r as i32, i)).unwrap();
            g.ordered_send(UPDATE, (r as i32 + 100, i)).unwrap();
        }
    }
    let total = (3 * 2 * N) as usize;
    wait_until("all deliveries", Duration::from_secs(30), || {
        members
            .iter()
            .all(|(_, l)| l.lock().unwrap().len() == total)
    });
    let logs: Vec<Vec<(Address, i32, i32)>> = members
        .iter()
        .map(|(_, l)| l.lock().unwrap().clone())
        .collect();
    for log in &logs {
        // FIFO per sender for Sends.
        for r in 0..3 {
            let seq: Vec<i32> = log.iter().filter(|e| e.1 == r).map(|e| e.2).collect();
            assert_eq!(seq, (0..N).collect::<Vec<_>>(), "FIFO order of sender {r}");
        }
        // The sender context matches the claimed rank.
        for (a, x, _) in log {
            let r = (*x % 100) as usize;
            assert_eq!(*a, systems[r].my_address());
        }
    }
    // One total order of the OrderedSends.
    let ordered: Vec<Vec<(i32, i32)>> = logs
        .iter()
        .map(|l| {
            l.iter()
                .filter(|e| e.1 >= 100)
                .map(|e| (e.1, e.2))
                .collect()
        })
        .collect();
    assert_eq!(ordered[0].len(), (3 * N) as usize);
    assert_eq!(ordered[0], ordered[1]);
    assert_eq!(ordered[0], ordered[2]);

    // Query ALL and MAJORITY.
    let t = Timeout::new(Duration::from_secs(10), TimeoutAction::Abort);
    let r = members[1]
        .0
        .query(NReplies::All, t, LOOKUP, (1i32,))
        .unwrap();
    assert_eq!(r.decode::<i32>().unwrap(), vec![total as i32 + 1; 3]);
    let r = members[2]
        .0
        .ordered_query(NReplies::Majority, t, LOOKUP, (0i32,))
        .unwrap();
    assert!(r.len() >= 2, "{r:?}");
    // NullReply everywhere: the query ends with no replies.
    let r = members[0]
        .0
        .query(NReplies::All, t, LOOKUP, (-2i32,))
        .unwrap();
    assert!(r.is_empty());
    assert_eq!(r.nulls(), 3);
    // AbortReply → typed error at the caller.
    let e = members[0]
        .0
        .query(NReplies::All, t, LOOKUP, (-1i32,))
        .unwrap_err();
    assert!(
        matches!(&e, VsyncError::Query(vsync::query::QueryError::Aborted { reason, .. }) if reason == "negative lookups are refused"),
        "{e:?}"
    );

    // Wrong argument types fail at the sender, naming the expected signatures.
    let e = members[0].0.send(UPDATE, ("x", 1i32)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no handler for request code 0 takes (String, i32); its handlers take (i32, i32)"
    );
    let e = members[0].0.ordered_send(77, (1i32,)).unwrap_err();
    assert!(
        e.to_string().starts_with("no handler for request code 77"),
        "{e}"
    );

    // Flush.
    members[2].0.send(UPDATE, (2i32, 999i32)).unwrap();
    members[2].0.flush().unwrap();
    members[2].0.flush_k(1).unwrap();

    // Graceful leave: the others see a leave, not a failure.
    let leaver = systems[2].my_address();
    members[2].0.leave().unwrap();
    assert!(!members[2].0.is_joined());
    wait_until("the leave view", Duration::from_secs(20), || {
        members[..2]
            .iter()
            .all(|(g, _)| g.view().is_some_and(|v| v.len() == 2))
    });
    for v in &views[..2] {
        let last = v.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.left, vec![leaver], "{last}");
        assert!(last.failed.is_empty(), "{last}");
    }
    // Timeout with Failure action when nobody... (2 members left, ALL answers).
    let r = members[0]
        .0
        .query(NReplies::All, t, LOOKUP, (0i32,))
        .unwrap();
    assert_eq!(r.len(), 2);

    for s in &systems {
        s.shutdown().unwrap();
    }
    // After shutdown: typed errors, no panics.
    assert_eq!(
        members[0].0.send(UPDATE, (1i32, 1i32)),
        Err(VsyncError::ShutDown)
    );
    assert_eq!(members[0].0.view(), None);
    assert_eq!(systems[0].shutdown(), Err(VsyncError::ShutDown));
    assert!(!systems[0].is_active());
    assert!(matches!(
        Group::new(&systems[1], "x"),
        Err(VsyncError::ShutDown)
    ));
    assert_eq!(
        members[1]
            .0
            .query(NReplies::All, t, LOOKUP, (0i32,))
            .unwrap_err(),
        VsyncError::ShutDown
    );
}
