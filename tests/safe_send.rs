//! SafeSend / SafeQuery end to end: three in-process members on loopback, each test with its
//! own embedded oracle port.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vsync::durability::{CompletionTag, DiskLogger, Durability, DurabilityError, LoggedMsg};
use vsync::safe::SafeError;
use vsync::{Address, Group, NReplies, System, Timeout, VsyncError};

mod common;
use common::{free_port, start, wait_until};

const UPDATE: u32 = 0;
const LOOKUP: u32 = 1;

/// What a member delivered: (sender index, number, completion tag if SafeSend).
type Log = Arc<Mutex<Vec<(i32, i32, Option<CompletionTag>)>>>;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "vsync-safe-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A member that logs UPDATE (from any primitive) and answers LOOKUP with its log length.
fn member(sys: &System, name: &str, phi: Option<usize>) -> (Group, Log) {
    let g = Group::new(sys, name).unwrap();
    let log: Log = Arc::default();
    let (l, h) = (log.clone(), g.clone());
    g.on(UPDATE, move |who: i32, n: i32| {
        l.lock().unwrap().push((who, n, h.completion_tag()));
    })
    .unwrap();
    let l = log.clone();
    g.on(LOOKUP, move |x: i32| l.lock().unwrap().len() as i32 + x)
        .unwrap();
    if let Some(phi) = phi {
        g.set_safe_send_threshold(phi).unwrap();
    }
    (g, log)
}

fn join_all(groups: &[Group]) {
    for g in groups {
        g.join().unwrap();
    }
    let n = groups.len();
    wait_until("the full view", Duration::from_secs(20), || {
        groups
            .iter()
            .all(|g| g.view().is_some_and(|v| v.len() == n))
    });
}

#[test]
fn total_order_across_ordered_and_safe_sends_from_several_senders() {
    let port = free_port();
    let systems: Vec<System> = (0..3).map(|_| start(port)).collect();
    let members: Vec<(Group, Log)> = systems.iter().map(|s| member(s, "order", None)).collect();
    let groups: Vec<Group> = members.iter().map(|m| m.0.clone()).collect();
    join_all(&groups);
    const PER: i32 = 60;
    std::thread::scope(|s| {
        for (i, g) in groups.iter().enumerate() {
            s.spawn(move || {
                for n in 0..PER {
                    if (n + i as i32) % 3 == 0 {
                        g.ordered_send(UPDATE, (i as i32, n)).unwrap();
                    } else {
                        g.safe_send(UPDATE, (i as i32, n)).unwrap();
                    }
                }
            });
        }
    });
    let total = 3 * PER as usize;
    wait_until("every delivery", Duration::from_secs(30), || {
        members
            .iter()
            .all(|(_, l)| l.lock().unwrap().len() == total)
    });
    let first = members[0].1.lock().unwrap().clone();
    for (_, l) in &members[1..] {
        assert_eq!(*l.lock().unwrap(), first, "same total order everywhere");
    }
    // Each sender's messages in its order; SafeSends carry their tags, OrderedSends none.
    for i in 0..3 {
        let mine: Vec<i32> = first.iter().filter(|e| e.0 == i).map(|e| e.1).collect();
        assert_eq!(mine, (0..PER).collect::<Vec<_>>());
    }
    let safe = first.iter().filter(|e| e.2.is_some()).count();
    assert_eq!(
        safe,
        total
            - (0..3)
                .map(|i| (0..PER).filter(|n| (n + i) % 3 == 0).count())
                .sum::<usize>()
    );
    let tags: HashSet<CompletionTag> = first.iter().filter_map(|e| e.2).collect();
    assert_eq!(tags.len(), safe, "completion tags are unique");
    // SafeQuery: delivered in the same order, every member answers in the same state.
    let r: Vec<i32> = groups[1]
        .safe_query(NReplies::All, Timeout::default(), LOOKUP, (0i32,))
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(r, vec![total as i32; 3]);
    // Outside a SafeSend handler there is no tag.
    assert_eq!(groups[0].completion_tag(), None);
    for s in &systems {
        s.shutdown().unwrap();
    }
}

#[test]
fn wrong_usage_is_a_typed_error_and_thresholds_must_agree() {
    let port = free_port();
    let systems: Vec<System> = (0..2).map(|_| start(port)).collect();
    let (a, _) = member(&systems[0], "usage", Some(2));
    assert!(matches!(
        a.set_safe_send_threshold(0),
        Err(VsyncError::Safe(SafeError::ZeroThreshold))
    ));
    a.join().unwrap();
    assert!(matches!(
        a.set_safe_send_threshold(1),
        Err(VsyncError::AlreadyJoined { .. })
    ));
    assert!(matches!(
        a.set_durability_method(vsync::durability::MemoryLogger::new()),
        Err(VsyncError::AlreadyJoined { .. })
    ));
    assert!(matches!(
        a.begin_async_update(),
        Err(VsyncError::Safe(SafeError::NotInSafeHandler))
    ));
    let bogus = CompletionTag {
        sender: Address::new(9, 9),
        view: 1,
        msg_id: 1,
    };
    assert_eq!(
        a.done(bogus).unwrap_err(),
        VsyncError::Safe(SafeError::UnknownTag(bogus))
    );
    // A member with another threshold has another group signature: refused.
    let (b, _) = member(&systems[1], "usage", Some(3));
    match b.join() {
        Err(VsyncError::Refused { reason, .. }) => {
            assert!(reason.contains("SafeSendThreshold"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Unjoined groups cannot SafeSend.
    assert!(matches!(
        b.safe_send(UPDATE, (0i32, 0i32)),
        Err(VsyncError::NotJoined { .. })
    ));
    for s in &systems {
        s.shutdown().unwrap();
    }
}

/// A durability method that shares a [`DiskLogger`] with the test.
#[derive(Clone)]
struct SharedDisk(Arc<Mutex<DiskLogger>>);

impl Durability for SharedDisk {
    fn log(&mut self, m: &LoggedMsg) -> Result<CompletionTag, DurabilityError> {
        self.0.lock().unwrap().log(m)
    }
    fn log_batch(&mut self, m: &[LoggedMsg]) -> Vec<Result<CompletionTag, DurabilityError>> {
        self.0.lock().unwrap().log_batch(m)
    }
    fn delivered(&mut self, t: CompletionTag) -> Result<(), DurabilityError> {
        self.0.lock().unwrap().delivered(t)
    }
    fn begin_async(&mut self, t: CompletionTag) -> Result<(), DurabilityError> {
        self.0.lock().unwrap().begin_async(t)
    }
    fn is_async(&self, t: CompletionTag) -> bool {
        self.0.lock().unwrap().is_async(t)
    }
    fn done(&mut self, t: CompletionTag) -> Result<(), DurabilityError> {
        self.0.lock().unwrap().done(t)
    }
    fn pending(&self) -> Vec<LoggedMsg> {
        self.0.lock().unwrap().pending()
    }
}

#[test]
fn disk_logger_writes_and_syncs_at_the_acceptors_only() {
    let port = free_port();
    let dir = tempdir("disk");
    let systems: Vec<System> = (0..3).map(|_| start(port)).collect();
    let mut disks = Vec::new();
    let mut members = Vec::new();
    for (i, s) in systems.iter().enumerate() {
        let (g, log) = member(s, "disk", Some(2));
        let d = SharedDisk(Arc::new(Mutex::new(
            DiskLogger::open(dir.join("log"), i).unwrap(),
        )));
        g.set_durability_method(d.clone()).unwrap();
        disks.push(d);
        members.push((g, log));
    }
    let groups: Vec<Group> = members.iter().map(|m| m.0.clone()).collect();
    join_all(&groups);
    // Hold the last update as an asynchronous one, so it stays pending in the logs.
    const N: i32 = 20;
    for n in 0..N {
        groups[2].safe_send(UPDATE, (2i32, n)).unwrap();
    }
    wait_until("every delivery", Duration::from_secs(30), || {
        members
            .iter()
            .all(|(_, l)| l.lock().unwrap().len() == N as usize)
    });
    // Ranks 0 and 1 (Φ = 2) logged every message, forcing it to disk; rank 2 never logged.
    // Every handler returned, so once all three members reported that, the logs collect
    // every message.
    let rank = |g: &Group| g.my_rank().unwrap();
    wait_until(
        "collection at the acceptors",
        Duration::from_secs(10),
        || disks.iter().all(|d| d.0.lock().unwrap().live() == 0),
    );
    for (g, d) in groups.iter().zip(&disks) {
        let disk = d.0.lock().unwrap();
        let copy = dir.join(format!("copy-{}.dat", rank(g)));
        std::fs::copy(disk.path(), &copy).unwrap();
        let reopened = DiskLogger::open_path(&copy).unwrap();
        if rank(g) < 2 {
            assert!(disk.syncs() >= 1, "acceptor forced its log to disk");
            assert!(disk.syncs() <= N as u64);
            assert!(
                reopened.recovery().records >= N as usize,
                "every message is in the acceptor's file"
            );
            assert!(reopened.pending().is_empty());
        } else {
            assert_eq!(disk.syncs(), 0, "a non-acceptor never logs");
            assert_eq!(reopened.recovery().records, 0);
        }
    }
    for s in &systems {
        s.shutdown().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A replica whose UPDATE handler applies updates asynchronously: it records the tag, begins
/// an async update, and (if `finish`) calls `done` from another thread.
fn async_member(sys: &System, name: &str, log: DiskLogger, finish: bool) -> (Group, Log) {
    let g = Group::new(sys, name).unwrap();
    let applied: Log = Arc::default();
    let (l, h) = (applied.clone(), g.clone());
    g.on(UPDATE, move |who: i32, n: i32| {
        let tag = h.begin_async_update().unwrap();
        l.lock().unwrap().push((who, n, Some(tag)));
        if finish {
            let h = h.clone();
            std::thread::spawn(move || h.done(tag).unwrap());
        }
    })
    .unwrap();
    g.on(LOOKUP, |x: i32| x).unwrap();
    g.set_safe_send_threshold(3).unwrap();
    g.set_durability_method(log).unwrap();
    (g, applied)
}

#[test]
fn pending_messages_are_replayed_with_their_tags_after_a_total_failure() {
    let port = free_port();
    let dir = tempdir("replay");
    let base = dir.join("acc");
    // Run 1: three members, Φ = 3, disk logs; updates 0..3 are finished, 3..6 left undone.
    let systems: Vec<System> = (0..3).map(|_| start(port)).collect();
    let members: Vec<(Group, Log)> = systems
        .iter()
        .enumerate()
        .map(|(i, s)| async_member(s, "replay", DiskLogger::open(&base, i).unwrap(), false))
        .collect();
    let groups: Vec<Group> = members.iter().map(|m| m.0.clone()).collect();
    join_all(&groups);
    for n in 0..6 {
        groups[1].safe_send(UPDATE, (1i32, n)).unwrap();
    }
    wait_until("run 1 deliveries", Duration::from_secs(30), || {
        members.iter().all(|(_, l)| l.lock().unwrap().len() == 6)
    });
    let run1 = members[0].1.lock().unwrap().clone();
    for (_, l) in &members[1..] {
        assert_eq!(*l.lock().unwrap(), run1);
    }
    // The first three updates complete everywhere; the fourth at two members of three (so it
    // is not collected: the manual's GC waits for every member that delivered it); the last
    // two nowhere.
    for (i, (g, l)) in members.iter().enumerate() {
        let upto = if i < 2 { 4 } else { 3 };
        for e in &l.lock().unwrap()[..upto] {
            g.done(e.2.unwrap()).unwrap();
        }
    }
    let undone: Vec<CompletionTag> = run1[3..].iter().map(|e| e.2.unwrap()).collect();
    let log0 = base.with_file_name("acc0.dat");
    let copy = dir.join("copy.dat");
    wait_until(
        "collection of the finished updates",
        Duration::from_secs(10),
        || {
            std::fs::copy(&log0, &copy).unwrap();
            let l = DiskLogger::open_path(&copy).unwrap();
            l.pending().iter().map(|m| m.tag).collect::<Vec<_>>() == undone
        },
    );
    assert_eq!(
        groups[0].done(run1[0].2.unwrap()).unwrap_err(),
        VsyncError::Safe(SafeError::UnknownTag(run1[0].2.unwrap())),
        "a second done for the same tag is refused"
    );
    // Total failure: every member goes away.
    for s in &systems {
        s.shutdown().unwrap();
    }
    drop(members);
    drop(groups);
    // Run 2: the member that logged as rank 0 restarts first and re-creates the group.
    let restarted = start(port);
    let reopened = DiskLogger::open(&base, 0).unwrap();
    let pending: Vec<CompletionTag> = reopened.pending().iter().map(|m| m.tag).collect();
    assert_eq!(
        pending, undone,
        "the log holds exactly the unfinished updates"
    );
    let (g, applied) = async_member(&restarted, "replay", reopened, true);
    g.create().unwrap();
    wait_until("the replay", Duration::from_secs(20), || {
        applied.lock().unwrap().len() == 3
    });
    let replayed = applied.lock().unwrap().clone();
    assert_eq!(
        replayed,
        run1[3..].to_vec(),
        "same updates, same order, same completion tags"
    );
    // Duplicates are detectable: every replayed tag was seen in run 1.
    let seen: HashSet<CompletionTag> = run1.iter().filter_map(|e| e.2).collect();
    assert!(replayed.iter().all(|e| seen.contains(&e.2.unwrap())));
    // New SafeSends after the replay get new tags and are delivered after it.
    let t = g.safe_send(UPDATE, (9i32, 9i32)).unwrap();
    assert!(!seen.contains(&t));
    wait_until("the new update", Duration::from_secs(20), || {
        applied.lock().unwrap().len() == 4
    });
    assert_eq!(applied.lock().unwrap()[3], (9, 9, Some(t)));
    // The replayed updates were done this time (from the handler's thread): the log empties.
    wait_until("the log to empty", Duration::from_secs(10), || {
        std::fs::copy(&log0, &copy).unwrap();
        DiskLogger::open_path(&copy).unwrap().pending().is_empty()
    });
    restarted.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn acceptor_goes_away(crash: bool, victim_rank: usize) {
    let port = free_port();
    let systems: Vec<System> = (0..3).map(|_| start(port)).collect();
    let name = if crash { "crash" } else { "leave" };
    let members: Vec<(Group, Log)> = systems.iter().map(|s| member(s, name, None)).collect();
    let groups: Vec<Group> = members.iter().map(|m| m.0.clone()).collect();
    join_all(&groups);
    // An acceptor (Φ = every member) goes away while the others stream SafeSends and
    // OrderedSends.
    let victim = groups
        .iter()
        .position(|g| g.my_rank() == Some(victim_rank))
        .unwrap();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    const PER: i32 = 150;
    std::thread::scope(|s| {
        for &i in &survivors {
            let g = &groups[i];
            s.spawn(move || {
                for n in 0..PER {
                    let r = if n % 4 == 0 {
                        g.ordered_send(UPDATE, (i as i32, n))
                    } else {
                        g.safe_send(UPDATE, (i as i32, n)).map(|_| ())
                    };
                    r.unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        std::thread::sleep(Duration::from_millis(60));
        if crash {
            systems[victim].crash_for_testing();
        } else {
            groups[victim].leave().unwrap();
        }
    });
    let total = survivors.len() * PER as usize;
    wait_until("the view of the survivors", Duration::from_secs(20), || {
        survivors
            .iter()
            .all(|i| groups[*i].view().is_some_and(|v| v.len() == 2))
    });
    wait_until(
        "every delivery at the survivors",
        Duration::from_secs(40),
        || {
            survivors
                .iter()
                .all(|i| members[*i].1.lock().unwrap().len() == total)
        },
    );
    let a = members[survivors[0]].1.lock().unwrap().clone();
    let b = members[survivors[1]].1.lock().unwrap().clone();
    assert_eq!(a, b, "survivors deliver everything in one order");
    for &i in &survivors {
        let mine: Vec<i32> = a.iter().filter(|e| e.0 == i as i32).map(|e| e.1).collect();
        assert_eq!(mine, (0..PER).collect::<Vec<_>>());
    }
    // What the victim delivered is a prefix of the survivors' order.
    let v = members[victim].1.lock().unwrap().clone();
    assert_eq!(
        v[..],
        a[..v.len()],
        "the victim delivered a prefix of the same order"
    );
    assert!(
        v.len() < total,
        "the stream went on after the victim was gone"
    );
    let view = groups[survivors[0]].view().unwrap();
    let victim_addr = systems[victim].my_address();
    if crash {
        assert!(view.failed.contains(&victim_addr) || !view.contains(victim_addr));
    }
    for &i in &survivors {
        systems[i].shutdown().unwrap();
    }
}

#[test]
fn an_acceptor_leaving_mid_stream_loses_nothing() {
    acceptor_goes_away(false, 1);
}

#[test]
fn an_acceptor_crashing_mid_stream_loses_nothing() {
    acceptor_goes_away(true, 1);
}

#[test]
fn the_sequencer_crashing_mid_stream_loses_nothing() {
    acceptor_goes_away(true, 0);
}

#[test]
fn a_joiner_mid_stream_gets_the_held_safesends_with_the_state() {
    let port = free_port();
    let systems: Vec<System> = (0..3).map(|_| start(port)).collect();
    let logs: Vec<Arc<Mutex<Vec<i32>>>> = (0..3).map(|_| Arc::default()).collect();
    let groups: Vec<Group> = systems
        .iter()
        .zip(&logs)
        .map(|(s, log)| {
            let g = Group::new(s, "joiner").unwrap();
            let l = log.clone();
            g.on(UPDATE, move |_who: i32, n: i32| l.lock().unwrap().push(n))
                .unwrap();
            let l = log.clone();
            g.make_checkpoint(move || {
                vec![l
                    .lock()
                    .unwrap()
                    .iter()
                    .flat_map(|n| n.to_le_bytes())
                    .collect()]
            })
            .unwrap();
            let l = log.clone();
            g.load_checkpoint(move |chunks| {
                let mut l = l.lock().unwrap();
                for c in chunks {
                    l.extend(
                        c.chunks_exact(4)
                            .map(|b| i32::from_le_bytes(b.try_into().unwrap())),
                    );
                }
            })
            .unwrap();
            g
        })
        .collect();
    join_all(&groups[..2]);
    const N: i32 = 600;
    std::thread::scope(|s| {
        let g = &groups[0];
        s.spawn(move || {
            for n in 0..N {
                if n % 5 == 0 {
                    g.ordered_send(UPDATE, (0i32, n)).unwrap();
                } else {
                    g.safe_send(UPDATE, (0i32, n)).unwrap();
                }
                if n % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        groups[2].join().unwrap();
    });
    wait_until("every delivery", Duration::from_secs(30), || {
        logs.iter().all(|l| l.lock().unwrap().len() == N as usize)
    });
    for l in &logs {
        assert_eq!(*l.lock().unwrap(), (0..N).collect::<Vec<_>>());
    }
    for s in &systems {
        s.shutdown().unwrap();
    }
}

/// A durability method whose disk is broken: every log fails.
struct BrokenDisk;

impl Durability for BrokenDisk {
    fn log(&mut self, _: &LoggedMsg) -> Result<CompletionTag, DurabilityError> {
        Err(DurabilityError::Poisoned)
    }
    fn delivered(&mut self, t: CompletionTag) -> Result<(), DurabilityError> {
        Err(DurabilityError::UnknownTag(t))
    }
    fn begin_async(&mut self, t: CompletionTag) -> Result<(), DurabilityError> {
        Err(DurabilityError::UnknownTag(t))
    }
    fn is_async(&self, _: CompletionTag) -> bool {
        false
    }
    fn done(&mut self, t: CompletionTag) -> Result<(), DurabilityError> {
        Err(DurabilityError::UnknownTag(t))
    }
    fn pending(&self) -> Vec<LoggedMsg> {
        Vec::new()
    }
}

#[test]
fn an_acceptor_that_cannot_log_blocks_delivery_until_it_is_replaced() {
    let port = free_port();
    let systems: Vec<System> = (0..3).map(|_| start(port)).collect();
    let members: Vec<(Group, Log)> = systems
        .iter()
        .map(|s| member(s, "broken", Some(2)))
        .collect();
    members[1].0.set_durability_method(BrokenDisk).unwrap();
    let groups: Vec<Group> = members.iter().map(|m| m.0.clone()).collect();
    join_all(&groups);
    assert_eq!(
        groups[1].my_rank(),
        Some(1),
        "the broken member is an acceptor"
    );
    for n in 0..5 {
        groups[0].safe_send(UPDATE, (0i32, n)).unwrap();
    }
    wait_until("the failed logs", Duration::from_secs(10), || {
        groups[1].safe_log_failures() >= 5
    });
    std::thread::sleep(Duration::from_millis(100));
    for (_, l) in &members {
        assert!(
            l.lock().unwrap().is_empty(),
            "nothing without Φ = 2 accepts"
        );
    }
    // The broken acceptor leaves: in the view {0, 2}, rank 2's member is the second acceptor.
    groups[1].leave().unwrap();
    wait_until("delivery in the new view", Duration::from_secs(20), || {
        [0, 2]
            .iter()
            .all(|i| members[*i].1.lock().unwrap().len() == 5)
    });
    assert_eq!(*members[0].1.lock().unwrap(), *members[2].1.lock().unwrap());
    assert!(members[1].1.lock().unwrap().is_empty());
    for s in &systems {
        s.shutdown().unwrap();
    }
}
