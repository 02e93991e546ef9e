//! Tests of query reply collection (`vsync::query`): ALL / MAJORITY / k, each timeout action,
//! failures during a query, AbortReply, duplicates and strangers, the three collection styles
//! and the wrong-type decode error.

use std::time::Duration;

use proptest::prelude::*;
use vsync::marshal::{Address, ArgList};
use vsync::query::{
    NReplies, QueryError, ReplyCollector, ReplyKind, ReplyOutcome, Timeout, TimeoutAction,
};

fn members(n: u32) -> Vec<Address> {
    (1..=n).map(|p| Address::new(p, 1)).collect()
}

fn val<T: vsync::marshal::Encode>(v: T) -> ReplyKind {
    ReplyKind::Value(ArgList::one(&v).into_bytes())
}

const T0: Duration = Duration::from_secs(1000);

fn collector(n: u32, want: NReplies, action: TimeoutAction) -> (Vec<Address>, ReplyCollector) {
    let m = members(n);
    let q = ReplyCollector::new(1, &m, want, Timeout::millis(1000, action), T0);
    (m, q)
}

#[test]
fn all_waits_for_every_member() {
    let (m, mut q) = collector(3, NReplies::All, TimeoutAction::Abort);
    assert_eq!(q.wanted(), 3);
    q.on_reply(m[2], val(3i32)).unwrap();
    q.on_reply(m[0], val(1i32)).unwrap();
    assert!(!q.is_done());
    assert_eq!(q.awaiting().collect::<Vec<_>>(), [m[1]]);
    q.on_reply(m[1], val(2i32)).unwrap();
    assert!(q.is_done());
    let r = q.finish().unwrap();
    assert_eq!(r.decode::<i32>().unwrap(), [3, 1, 2], "arrival order");
    assert_eq!(r.senders().collect::<Vec<_>>(), [m[2], m[0], m[1]]);
}

#[test]
fn all_with_null_replies_returns_fewer() {
    let (m, mut q) = collector(3, NReplies::All, TimeoutAction::Abort);
    q.on_reply(m[0], ReplyKind::Null).unwrap();
    q.on_reply(m[1], val(2i32)).unwrap();
    q.on_reply(m[2], ReplyKind::Null).unwrap();
    let r = q.finish().unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r.nulls(), 2);
    assert_eq!(r.wanted(), 3);
}

#[test]
fn all_null_gives_zero_replies() {
    let (m, mut q) = collector(2, NReplies::All, TimeoutAction::Abort);
    for a in &m {
        q.on_reply(*a, ReplyKind::Null).unwrap();
    }
    let r = q.finish().unwrap();
    assert!(r.is_empty());
    assert_eq!(r.invoke(|v: Vec<(i32,)>| v.len()).unwrap(), 0);
}

#[test]
fn majority_is_more_than_half() {
    for (n, wanted) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
        let (m, mut q) = collector(n, NReplies::Majority, TimeoutAction::Abort);
        assert_eq!(q.wanted(), wanted, "n = {n}");
        for (i, a) in m.iter().take(wanted).enumerate() {
            assert!(!q.is_done());
            q.on_reply(*a, val(i as u8)).unwrap();
        }
        assert!(q.is_done(), "n = {n}");
        assert_eq!(q.finish().unwrap().len(), wanted);
    }
}

#[test]
fn k_replies_then_late_ones_are_ignored() {
    let (m, mut q) = collector(4, NReplies::Count(2), TimeoutAction::Abort);
    q.on_reply(m[3], val("d")).unwrap();
    q.on_reply(m[1], val("b")).unwrap();
    assert!(q.is_done());
    assert_eq!(q.on_reply(m[0], val("a")).unwrap(), ReplyOutcome::Ignored);
    assert_eq!(q.ignored(), 1);
    assert_eq!(q.finish().unwrap().decode::<String>().unwrap(), ["d", "b"]);
}

#[test]
fn k_larger_than_group_ends_when_nobody_is_left() {
    let (m, mut q) = collector(2, NReplies::Count(5), TimeoutAction::Abort);
    q.on_reply(m[0], val(1u8)).unwrap();
    q.on_reply(m[1], val(2u8)).unwrap();
    assert_eq!(q.finish().unwrap().len(), 2);
}

#[test]
fn zero_wanted_or_nobody_asked_is_done_at_once() {
    let (_, q) = collector(3, NReplies::Count(0), TimeoutAction::Abort);
    assert!(q.finish().unwrap().is_empty());
    let q = ReplyCollector::new(2, &[], NReplies::All, Timeout::default(), T0);
    assert!(q.is_done());
}

#[test]
fn failure_mid_query_is_not_awaited_nor_counted() {
    let (m, mut q) = collector(3, NReplies::All, TimeoutAction::Abort);
    q.on_reply(m[0], val(1i32)).unwrap();
    assert!(q.on_member_failed(m[1]));
    assert!(!q.on_member_failed(m[1]), "already failed");
    assert!(!q.is_done());
    // A member that replied and then failed: its reply still counts.
    assert!(!q.on_member_failed(m[0]));
    q.on_reply(m[2], val(3i32)).unwrap();
    let r = q.finish().unwrap();
    assert_eq!(r.decode::<i32>().unwrap(), [1, 3]);
    assert_eq!(r.crashed(), [m[1]]);
    assert!(r.failed().is_empty());
}

#[test]
fn reply_from_failed_member_is_ignored() {
    let (m, mut q) = collector(2, NReplies::All, TimeoutAction::Abort);
    q.on_member_failed(m[0]);
    assert_eq!(q.on_reply(m[0], val(1i32)).unwrap(), ReplyOutcome::Ignored);
    q.on_reply(m[1], val(2i32)).unwrap();
    assert_eq!(q.finish().unwrap().len(), 1);
}

#[test]
fn whole_group_fails() {
    let (m, mut q) = collector(2, NReplies::Majority, TimeoutAction::Abort);
    for a in &m {
        q.on_member_failed(*a);
    }
    let r = q.finish().unwrap();
    assert!(r.is_empty());
    assert_eq!(r.crashed(), &m[..]);
}

#[test]
fn timeout_failure_reports_missing_members() {
    let (m, mut q) = collector(3, NReplies::All, TimeoutAction::Failure);
    q.on_reply(m[1], val(2i32)).unwrap();
    assert_eq!(q.deadline(), T0 + Duration::from_secs(1));
    assert!(!q.on_timeout(T0 + Duration::from_millis(999)), "too early");
    assert!(!q.is_done());
    assert!(q.on_timeout(T0 + Duration::from_secs(1)));
    assert!(!q.on_timeout(T0 + Duration::from_secs(2)), "fires once");
    // Replies after the timeout from the members declared failed are ignored.
    assert_eq!(q.on_reply(m[0], val(1i32)).unwrap(), ReplyOutcome::Ignored);
    let r = q.finish().unwrap();
    assert_eq!(r.decode::<i32>().unwrap(), [2]);
    assert_eq!(r.failed(), [m[0], m[2]]);
    assert_eq!(r.nulls(), 0);
}

#[test]
fn timeout_null_reply_treats_missing_as_null() {
    let (m, mut q) = collector(3, NReplies::All, TimeoutAction::NullReply);
    q.on_reply(m[2], val(3i32)).unwrap();
    assert!(q.on_timeout(T0 + Duration::from_secs(5)));
    let r = q.finish().unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r.nulls(), 2);
    assert_eq!(r.timed_out_as_null(), [m[0], m[1]]);
    assert!(r.failed().is_empty());
}

#[test]
fn timeout_abort_is_an_error() {
    let (m, mut q) = collector(3, NReplies::Majority, TimeoutAction::Abort);
    q.on_reply(m[0], val(1i32)).unwrap();
    assert!(q.on_timeout(T0 + Duration::from_secs(1)));
    let e = q.finish().unwrap_err();
    assert_eq!(
        e,
        QueryError::Timeout {
            got: 1,
            wanted: 2,
            missing: vec![m[1], m[2]]
        }
    );
    assert_eq!(
        e.to_string(),
        "query timed out with 1 of 2 replies; no answer from M2.1, M3.1"
    );
}

#[test]
fn default_timeout_is_15s_null_reply() {
    let m = members(2);
    let mut q = ReplyCollector::new(1, &m, NReplies::All, Timeout::default(), T0);
    assert_eq!(q.deadline(), T0 + Duration::from_secs(15));
    assert!(!q.on_timeout(T0 + Duration::from_secs(14)));
    assert!(q.on_timeout(T0 + Duration::from_secs(15)));
    assert_eq!(q.finish().unwrap().nulls(), 2);
}

#[test]
fn abort_reply_ends_the_query() {
    let (m, mut q) = collector(3, NReplies::All, TimeoutAction::NullReply);
    q.on_reply(m[0], val(1i32)).unwrap();
    q.on_reply(m[1], ReplyKind::Abort("no such account".into()))
        .unwrap();
    assert!(q.is_done());
    assert_eq!(q.on_reply(m[2], val(3i32)).unwrap(), ReplyOutcome::Ignored);
    assert!(!q.on_timeout(T0 + Duration::from_secs(60)));
    let e = q.finish().unwrap_err();
    assert_eq!(e.to_string(), "query aborted by M2.1: no such account");
}

#[test]
fn duplicates_are_ignored_and_counted() {
    let (m, mut q) = collector(2, NReplies::All, TimeoutAction::Abort);
    assert_eq!(q.on_reply(m[0], val(1i32)).unwrap(), ReplyOutcome::Accepted);
    assert_eq!(
        q.on_reply(m[0], val(9i32)).unwrap(),
        ReplyOutcome::Duplicate
    );
    assert_eq!(
        q.on_reply(m[0], ReplyKind::Null).unwrap(),
        ReplyOutcome::Duplicate
    );
    q.on_reply(m[1], ReplyKind::Null).unwrap();
    assert_eq!(
        q.on_reply(m[1], val(2i32)).unwrap(),
        ReplyOutcome::Duplicate
    );
    assert_eq!(q.duplicates(), 3);
    let r = q.finish().unwrap();
    assert_eq!(r.decode::<i32>().unwrap(), [1]);
    assert_eq!(r.duplicates(), 3);
}

#[test]
fn strangers_are_rejected() {
    let (_, mut q) = collector(2, NReplies::All, TimeoutAction::Abort);
    let stranger = Address::new(99, 0);
    let e = q.on_reply(stranger, val(1i32)).unwrap_err();
    assert_eq!(
        e,
        QueryError::UnexpectedSender {
            query: 1,
            from: stranger
        }
    );
    assert_eq!(
        e.to_string(),
        "reply to query 1 from M99.0, which was not asked to reply"
    );
    assert_eq!(q.got(), 0);
    assert!(!q.on_member_failed(stranger));
}

#[test]
fn finish_before_done_is_not_done() {
    let (m, mut q) = collector(3, NReplies::All, TimeoutAction::Abort);
    q.on_reply(m[0], val(1i32)).unwrap();
    let e = q.finish().unwrap_err();
    assert_eq!(
        e.to_string(),
        "query not finished: 1 of 3 replies, 2 member(s) still awaited"
    );
}

#[test]
fn p2p_query() {
    let target = Address::new(5, 2);
    let mut q = ReplyCollector::p2p(4, target, Timeout::millis(10, TimeoutAction::Failure), T0);
    assert!(matches!(
        q.on_reply(Address::new(6, 0), val(0u8)),
        Err(QueryError::UnexpectedSender { .. })
    ));
    q.on_reply(
        target,
        ReplyKind::Value(ArgList::new(&(1u8, 2u16)).into_bytes()),
    )
    .unwrap();
    let r = q.finish().unwrap();
    assert_eq!(r.query_id(), 4);
    assert_eq!(r.decode_args::<(u8, u16)>().unwrap(), [(1, 2)]);
}

#[test]
fn three_collection_styles_and_wrong_type() {
    let (m, mut q) = collector(2, NReplies::All, TimeoutAction::Abort);
    q.on_reply(
        m[0],
        ReplyKind::Value(ArgList::new(&(7i32, vec![1.5f64])).into_bytes()),
    )
    .unwrap();
    q.on_reply(
        m[1],
        ReplyKind::Value(ArgList::new(&(8i32, vec![2.5f64, 3.0])).into_bytes()),
    )
    .unwrap();
    let r = q.finish().unwrap();

    let typed: Vec<(i32, Vec<f64>)> = r.decode_args().unwrap();
    assert_eq!(typed, [(7, vec![1.5]), (8, vec![2.5, 3.0])]);

    let raw = r.raw();
    assert_eq!(raw.len(), 2);
    assert_eq!(
        ArgList::from_bytes(raw[1].clone())
            .unwrap()
            .decode::<(i32, Vec<f64>)>()
            .unwrap(),
        (8, vec![2.5, 3.0])
    );

    let (ids, lens) = r
        .invoke(|v: Vec<(i32, Vec<f64>)>| {
            let ids: Vec<i32> = v.iter().map(|x| x.0).collect();
            let lens: Vec<usize> = v.iter().map(|x| x.1.len()).collect();
            (ids, lens)
        })
        .unwrap();
    assert_eq!((ids, lens), (vec![7, 8], vec![1, 2]));

    let e = r.decode_args::<(i32, Vec<f32>)>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "reply 0 from M1.1 could not be decoded: signature mismatch: expected (i32, Vec<f32>) but the message carries (i32, Vec<f64>)"
    );
    assert!(std::error::Error::source(&e).is_some());
    let mut called = false;
    assert!(r.invoke(|_: Vec<(String,)>| called = true).is_err());
    assert!(!called);
    assert_eq!(r.into_raw(), raw);
}

#[test]
fn garbage_reply_is_a_decode_error() {
    let (m, mut q) = collector(1, NReplies::All, TimeoutAction::Abort);
    q.on_reply(m[0], ReplyKind::Value(vec![0xff, 0x01]))
        .unwrap();
    let e = q.finish().unwrap().decode::<i32>().unwrap_err();
    assert!(matches!(e, QueryError::Decode { index: 0, .. }), "{e}");
}

#[derive(Clone, Debug)]
enum Ev {
    Value(usize),
    Null(usize),
    Fail(usize),
    Timeout,
}

proptest! {
    /// Under any interleaving of replies, nulls, failures and a timeout, the collector ends
    /// exactly when the rules say, never counts a member twice, and never loses a value.
    #[test]
    fn random_events_follow_the_rules(
        n in 1usize..7,
        want in prop_oneof![Just(NReplies::All), Just(NReplies::Majority), (0usize..8).prop_map(NReplies::Count)],
        action in prop_oneof![Just(TimeoutAction::Failure), Just(TimeoutAction::NullReply), Just(TimeoutAction::Abort)],
        evs in prop::collection::vec(
            prop_oneof![
                (0usize..8).prop_map(Ev::Value),
                (0usize..8).prop_map(Ev::Null),
                (0usize..8).prop_map(Ev::Fail),
                Just(Ev::Timeout)
            ],
            0..30
        ),
    ) {
        let m = members(n as u32);
        let mut q = ReplyCollector::new(1, &m, want, Timeout::millis(10, action), T0);
        let wanted = want.wanted(n);
        let mut answered = vec![false; n];
        let mut values = Vec::new();
        let mut done = wanted == 0;
        let mut timed_out = false;
        for ev in evs {
            prop_assert_eq!(q.is_done(), done);
            match ev {
                Ev::Value(i) | Ev::Null(i) | Ev::Fail(i) if i >= n => {
                    prop_assert!(q.on_reply(Address::new(100, 0), ReplyKind::Null).is_err());
                }
                Ev::Value(i) => {
                    let o = q.on_reply(m[i], val(i as u32)).unwrap();
                    if !answered[i] && !done {
                        prop_assert_eq!(o, ReplyOutcome::Accepted);
                        values.push(i as u32);
                        answered[i] = true;
                    } else {
                        prop_assert_ne!(o, ReplyOutcome::Accepted);
                    }
                }
                Ev::Null(i) => {
                    let o = q.on_reply(m[i], ReplyKind::Null).unwrap();
                    prop_assert_eq!(o == ReplyOutcome::Accepted, !answered[i] && !done);
                    if !done { answered[i] = true; }
                }
                Ev::Fail(i) => {
                    let was = q.on_member_failed(m[i]);
                    prop_assert_eq!(was, !answered[i] && !done);
                    if !done { answered[i] = true; }
                }
                Ev::Timeout => {
                    prop_assert_eq!(q.on_timeout(T0 + Duration::from_millis(10)), !done);
                    if !done { timed_out = true; done = true; }
                }
            }
            if values.len() >= wanted || answered.iter().all(|&a| a) {
                done = true;
            }
        }
        prop_assert_eq!(q.is_done(), done);
        match q.finish() {
            Ok(r) => {
                prop_assert!(done);
                prop_assert_eq!(r.decode::<u32>().unwrap(), values);
                if timed_out && action == TimeoutAction::Failure {
                    prop_assert!(!r.failed().is_empty());
                }
            }
            Err(QueryError::Timeout { got, .. }) => {
                prop_assert!(timed_out && action == TimeoutAction::Abort);
                prop_assert_eq!(got, values.len());
            }
            Err(QueryError::NotDone { .. }) => prop_assert!(!done),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }
}
