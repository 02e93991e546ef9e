//! CausalSend and CausalQuery between in-process members (three `System`s sharing an
//! embedded oracle on a test-private loopback port).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vsync::dataplane::engine::{BackendChoice, EngineConfig};
use vsync::{Group, MsgKind, NReplies, System, Timeout, TimeoutAction};

mod common;
use common::{free_port, wait_until};

/// (chain, step): the next step is causal_sent by another member on delivery.
const HOP: u32 = 0;
/// (rank, i): a burst of concurrent causal sends.
const BURST: u32 = 1;
/// (rank, i) -> bool: has this member delivered BURST (rank, i)?
const SEEN: u32 = 2;

/// Members drop 10 % of the data-plane datagrams they receive, so retransmissions reorder
/// messages across senders and the causal holdback is exercised.
fn start(port: u16) -> System {
    let engine = EngineConfig {
        backend: BackendChoice::Portable,
        socket_buffer_bytes: 1 << 20,
        rx_loss: 0.10,
        ..EngineConfig::default()
    };
    System::builder()
        .oracle_port(port)
        .engine(engine)
        .join_timeout(Duration::from_secs(30))
        .start()
        .expect("system starts")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Hop(i32, i32),
    Burst(i32, i32),
}

type Log = Arc<Mutex<Vec<Entry>>>;

struct Member {
    sys: System,
    g: Group,
    log: Log,
    /// Cleared if a handler saw a kind other than Causal.
    kinds_ok: Arc<AtomicBool>,
}

/// Chains have `STEPS + 1` hops (steps 0..=STEPS).
const STEPS: i32 = 8;

fn member(sys: System) -> Member {
    let g = Group::new(&sys, "causal").unwrap();
    let log: Log = Arc::default();
    let kinds_ok = Arc::new(AtomicBool::new(true));
    let (l, gc, k) = (log.clone(), g.clone(), kinds_ok.clone());
    g.on(HOP, move |chain: i32, step: i32| {
        if gc.message_kind() != Some(MsgKind::Causal) {
            k.store(false, Ordering::Relaxed);
        }
        l.lock().unwrap().push(Entry::Hop(chain, step));
        let v = gc.view().unwrap();
        let next = (chain + step + 1) as usize % v.len();
        if step < STEPS && v.my_rank() == Some(next) {
            gc.causal_send(HOP, (chain, step + 1)).unwrap();
        }
    })
    .unwrap();
    let (l, gc, k) = (log.clone(), g.clone(), kinds_ok.clone());
    g.on(BURST, move |rank: i32, i: i32| {
        if gc.message_kind() != Some(MsgKind::Causal) {
            k.store(false, Ordering::Relaxed);
        }
        l.lock().unwrap().push(Entry::Burst(rank, i));
    })
    .unwrap();
    let l = log.clone();
    g.on(SEEN, move |rank: i32, i: i32| {
        l.lock().unwrap().contains(&Entry::Burst(rank, i))
    })
    .unwrap();
    Member {
        sys,
        g,
        log,
        kinds_ok,
    }
}

fn hops(log: &Log) -> Vec<(i32, i32)> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Entry::Hop(c, s) => Some((*c, *s)),
            _ => None,
        })
        .collect()
}

/// Starts `chains` chains numbered from `first` (chain k starts at rank k mod n), waits until
/// every member delivered all hops, and checks that each member delivered every chain's hops
/// exactly once and in causal (step) order.
fn run_chains(ms: &[&Member], first: i32, chains: i32) {
    let n = ms.len();
    for k in first..first + chains {
        ms[k as usize % n].g.causal_send(HOP, (k, 0)).unwrap();
    }
    let want = (chains * (STEPS + 1)) as usize;
    let range = first..first + chains;
    wait_until("every hop everywhere", Duration::from_secs(60), || {
        ms.iter().all(|m| {
            hops(&m.log)
                .iter()
                .filter(|(c, _)| range.contains(c))
                .count()
                >= want
        })
    });
    for (r, m) in ms.iter().enumerate() {
        let mut per_chain: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for (c, s) in hops(&m.log) {
            if range.contains(&c) {
                per_chain.entry(c).or_default().push(s);
            }
        }
        assert_eq!(per_chain.len(), chains as usize, "member {r}");
        for (c, steps) in per_chain {
            assert_eq!(
                steps,
                (0..=STEPS).collect::<Vec<_>>(),
                "member {r}: chain {c} delivered out of causal order (or not exactly once)"
            );
        }
    }
}

#[test]
fn causal_chains_bursts_queries_and_a_view_change() {
    let port = free_port();
    let ms: Vec<Member> = (0..3).map(|_| member(start(port))).collect();
    for m in &ms {
        m.g.join().unwrap();
    }
    wait_until("3 members", Duration::from_secs(30), || {
        ms.iter().all(|m| m.g.view().is_some_and(|v| v.len() == 3))
    });
    let ranks: Vec<usize> = ms.iter().map(|m| m.g.my_rank().unwrap()).collect();
    assert_eq!(ranks, [0, 1, 2]);
    let all: Vec<&Member> = ms.iter().collect();

    // 1. Causal chains hopping across the three senders: every member delivers X before
    //    the Y that a member sent after delivering X.
    run_chains(&all, 0, 40);

    // 2. Concurrent causal sends from every member: each delivered exactly once at every
    //    member, FIFO per sender.
    const N: i32 = 150;
    std::thread::scope(|s| {
        for (r, m) in ms.iter().enumerate() {
            s.spawn(move || {
                for i in 0..N {
                    m.g.causal_send(BURST, (r as i32, i)).unwrap();
                }
            });
        }
    });
    let bursts = |m: &Member| -> Vec<(i32, i32)> {
        m.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Entry::Burst(r, i) => Some((*r, *i)),
                _ => None,
            })
            .collect()
    };
    wait_until("every burst everywhere", Duration::from_secs(60), || {
        ms.iter().all(|m| bursts(m).len() >= 3 * N as usize)
    });
    for (who, m) in ms.iter().enumerate() {
        let b = bursts(m);
        assert_eq!(b.len(), 3 * N as usize, "member {who}: duplicates");
        for r in 0..3 {
            let seq: Vec<i32> = b.iter().filter(|e| e.0 == r).map(|e| e.1).collect();
            assert_eq!(seq, (0..N).collect::<Vec<_>>(), "member {who}, sender {r}");
        }
    }

    // 3. CausalQuery with ALL replies, causally after a message from another sender: rank 0
    //    sends X, rank 1 delivers X and then queries whether X was seen — every member must
    //    answer true (the query waits behind X where X is late).
    for i in 0..10 {
        ms[0].g.causal_send(BURST, (7, i)).unwrap();
        wait_until("rank 1 delivers X", Duration::from_secs(30), || {
            ms[1].log.lock().unwrap().contains(&Entry::Burst(7, i))
        });
        let t = Timeout::new(Duration::from_secs(20), TimeoutAction::Abort);
        let r = ms[1]
            .g
            .causal_query(NReplies::All, t, SEEN, (7i32, i))
            .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.decode::<bool>().unwrap(), vec![true; 3], "query {i}");
        let mut senders: Vec<_> = r.senders().collect();
        senders.sort();
        let mut expect: Vec<_> = ms.iter().map(|m| m.sys.my_address()).collect();
        expect.sort();
        assert_eq!(senders, expect);
        // The closure style too.
        let n = r.invoke(|v: Vec<(bool,)>| v.len()).unwrap();
        assert_eq!(n, 3);
    }
    // MAJORITY and k.
    let t = Timeout::new(Duration::from_secs(20), TimeoutAction::Abort);
    let r = ms[2]
        .g
        .causal_query(NReplies::Majority, t, SEEN, (7i32, 0i32))
        .unwrap();
    assert!(r.len() >= 2);
    let r = ms[0]
        .g
        .causal_query(NReplies::Count(1), t, SEEN, (7i32, 0i32))
        .unwrap();
    assert!(!r.is_empty());

    // 4. A view change: rank 2 leaves; the causal counters restart in the new view and
    //    chains keep their order among the two survivors.
    ms[2].g.leave().unwrap();
    wait_until("2 members", Duration::from_secs(30), || {
        ms[..2]
            .iter()
            .all(|m| m.g.view().is_some_and(|v| v.len() == 2))
    });
    run_chains(&all[..2], 1000, 20);

    let mut waited = 0;
    for m in &ms[..2] {
        assert!(
            m.kinds_ok.load(Ordering::Relaxed),
            "a handler saw a non-causal kind"
        );
        let s = m.sys.flavour_stats().unwrap();
        assert_eq!(s.causal_malformed, 0, "{s:?}");
        assert_eq!(s.causal_duplicates, 0, "{s:?}");
        assert_eq!(s.causal_overflow, 0, "{s:?}");
        assert_eq!(s.causal_held, 0, "{s:?}");
        assert!(s.causal_delivered > 0, "{s:?}");
        eprintln!("{s:?}");
        waited += s.causal_waited;
    }
    // The member that left counts too (the counters are per System).
    waited += ms[2].sys.flavour_stats().unwrap().causal_waited;
    // The loss made some messages arrive before their predecessors: the holdback worked.
    assert!(waited > 0, "no message was ever held back");
    for m in &ms {
        let _ = m.sys.shutdown();
    }
}
