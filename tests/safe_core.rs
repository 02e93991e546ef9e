//! The sans-IO SafeSend core (`vsync::safe::SafeCore`): deterministic unit tests and a
//! property test that simulates several members, random message interleavings, slow logging
//! and a view change that removes a member (possibly an acceptor).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use vsync::durability::CompletionTag;
use vsync::marshal::Address;
use vsync::safe::{DoneTracker, SafeAction, SafeCore, SafeError};

fn addr(i: usize) -> Address {
    Address::new(i as u32 + 1, 1)
}

fn tag(n: u64) -> CompletionTag {
    CompletionTag {
        sender: addr(9),
        view: 1,
        msg_id: n,
    }
}

fn drain(c: &mut SafeCore) -> Vec<SafeAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn delivered(actions: &[SafeAction]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            SafeAction::Deliver { payload, .. } | SafeAction::DeliverSafe { payload, .. } => {
                Some(payload.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn not_delivered_while_fewer_than_phi_acceptors_hold_it() {
    let members: Vec<Address> = (0..3).map(addr).collect();
    let mut c = SafeCore::new(members[2], 3);
    c.install(1, &members);
    assert_eq!(c.phi(), 3);
    assert!(c.is_acceptor());
    c.on_ordered(members[0], b"before".to_vec());
    assert_eq!(delivered(&drain(&mut c)), vec![b"before".to_vec()]);
    c.on_safe(members[1], tag(1), b"safe".to_vec());
    c.on_ordered(members[0], b"after".to_vec());
    let a = drain(&mut c);
    assert!(matches!(&a[..], [SafeAction::Log { view: 1, .. }]), "{a:?}");
    // Accepts of two of the three acceptors (one of them ours): still held, and so is the
    // OrderedSend behind it.
    c.on_logged(1, &[tag(1)]);
    assert_eq!(
        drain(&mut c),
        vec![SafeAction::Accept {
            view: 1,
            tags: vec![tag(1)]
        }]
    );
    c.on_accept(members[2], 1, &[tag(1)]);
    c.on_accept(members[0], 1, &[tag(1)]);
    c.on_accept(members[0], 1, &[tag(1)]); // a duplicate counts once
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.held(), 2);
    // Accepts of another view, or from a non-member, do not count.
    c.on_accept(members[1], 2, &[tag(1)]);
    c.on_accept(addr(7), 1, &[tag(1)]);
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.stats().stale_accepts, 1);
    assert_eq!(c.stats().foreign_accepts, 1);
    // The third acceptor: delivered, then the OrderedSend behind it.
    c.on_accept(members[1], 1, &[tag(1)]);
    assert_eq!(
        delivered(&drain(&mut c)),
        vec![b"safe".to_vec(), b"after".to_vec()]
    );
    assert!(!c.is_holding());
}

#[test]
fn accepts_may_arrive_before_the_message() {
    let members: Vec<Address> = (0..2).map(addr).collect();
    let mut c = SafeCore::new(members[1], 1); // Φ = 1: only rank 0 accepts
    c.install(4, &members);
    assert!(!c.is_acceptor());
    c.on_accept(members[0], 4, &[tag(5)]);
    c.on_safe(members[0], tag(5), b"x".to_vec());
    let a = drain(&mut c);
    assert_eq!(delivered(&a), vec![b"x".to_vec()]);
    assert!(!a.iter().any(|a| matches!(a, SafeAction::Log { .. })));
}

#[test]
fn a_view_change_re_accepts_what_the_old_view_did_not() {
    let members: Vec<Address> = (0..3).map(addr).collect();
    let mut c = SafeCore::new(members[1], 3);
    c.install(1, &members);
    c.on_safe(members[0], tag(1), b"a".to_vec());
    c.on_safe(members[0], tag(2), b"b".to_vec());
    drain(&mut c);
    // Message 2 was accepted by all of view 1, message 1 only by two: nothing is delivered.
    for m in &members {
        c.on_accept(*m, 1, &[tag(2)]);
    }
    c.on_accept(members[0], 1, &[tag(1)]);
    c.on_accept(members[1], 1, &[tag(1)]);
    assert!(drain(&mut c).is_empty());
    // Member 2 fails. View 2: {0, 1}; message 1 is logged and accepted again, message 2 stays
    // accepted.
    c.install(2, &members[..2]);
    let a = drain(&mut c);
    assert_eq!(
        a,
        vec![SafeAction::Log {
            view: 2,
            tag: tag(1),
            payload: b"a".to_vec()
        }]
    );
    c.on_logged(1, &[tag(1)]); // the old view's log report is stale
    assert!(drain(&mut c).is_empty());
    c.on_accept(members[0], 1, &[tag(1)]); // and so are old accepts
    assert!(drain(&mut c).is_empty());
    c.on_accept(members[0], 2, &[tag(1)]);
    c.on_accept(members[1], 2, &[tag(1)]);
    assert_eq!(
        delivered(&drain(&mut c)),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
}

#[test]
fn snapshot_restores_the_holdback_queue_for_a_joiner() {
    let members: Vec<Address> = (0..2).map(addr).collect();
    let mut old = SafeCore::new(members[0], 2);
    old.install(1, &members);
    old.on_safe(members[1], tag(1), b"held".to_vec());
    old.on_ordered(members[1], b"behind".to_vec());
    old.on_safe(members[1], tag(2), b"accepted".to_vec());
    old.on_accept(members[0], 1, &[tag(2)]);
    old.on_accept(members[1], 1, &[tag(2)]);
    drain(&mut old);
    let view2: Vec<Address> = (0..3).map(addr).collect();
    old.install(2, &view2);
    drain(&mut old);
    let snap = old.snapshot();
    let mut joiner = SafeCore::new(view2[2], 2);
    joiner.restore(&snap).unwrap();
    joiner.install(2, &view2);
    assert_eq!(joiner.held(), 3);
    assert!(!joiner.is_acceptor());
    assert!(drain(&mut joiner).is_empty());
    for c in [&mut old, &mut joiner] {
        c.on_accept(view2[0], 2, &[tag(1)]);
        c.on_accept(view2[1], 2, &[tag(1)]);
    }
    let want = vec![b"held".to_vec(), b"behind".to_vec(), b"accepted".to_vec()];
    assert_eq!(delivered(&drain(&mut old)), want);
    assert_eq!(delivered(&drain(&mut joiner)), want);
    // Garbage is a typed error and leaves the core as it was.
    let mut c = SafeCore::new(view2[2], 2);
    for bad in [&snap[..snap.len() - 1], &snap[..5], &[0xff; 40][..]] {
        assert!(matches!(c.restore(bad), Err(SafeError::BadSnapshot(_))));
    }
    assert_eq!(c.held(), 0);
}

#[test]
fn done_tracker_waits_for_every_member_that_delivered() {
    let m: Vec<Address> = (0..3).map(addr).collect();
    let mut t = DoneTracker::default();
    t.install(&m);
    t.on_delivered(tag(1));
    t.on_done(m[0], &[tag(1)]);
    t.on_done(m[0], &[tag(1)]); // repeated: counts once
    t.on_done(m[1], &[tag(1)]);
    assert!(t.take_ready().is_empty());
    assert_eq!(t.waiting(), 1);
    // Member 2 fails before reporting: it is no longer waited for.
    t.install(&m[..2]);
    assert_eq!(t.take_ready(), vec![tag(1)]);
    // A report for a message not delivered here is kept for this view only.
    t.on_done(m[1], &[tag(2)]);
    t.install(&m[..2]);
    t.on_delivered(tag(2));
    assert!(
        t.take_ready().is_empty(),
        "the stale early report was dropped"
    );
    t.on_done(m[0], &[tag(2)]);
    t.on_done(m[1], &[tag(2)]);
    assert_eq!(t.take_ready(), vec![tag(2)]);
    // A joiner is not waited for messages delivered before it joined.
    t.on_delivered(tag(3));
    t.install(&[m[0], m[1], addr(5)]);
    t.on_done(m[0], &[tag(3)]);
    t.on_done(m[1], &[tag(3)]);
    assert_eq!(t.take_ready(), vec![tag(3)]);
    assert_eq!(t.waiting(), 0);
    assert_eq!(t.dropped(), 0);
}

// ------------------------------------------------------------------------------------------
// Simulation.

#[derive(Clone, Debug)]
enum Item {
    Plain(u64),
    Safe(u64),
}

/// An accept message: its view and tags.
type AcceptMsg = (u64, Vec<CompletionTag>);

struct Sim {
    cores: Vec<SafeCore>,
    alive: Vec<bool>,
    members: Vec<Address>,
    view: u64,
    /// Total order; `next[i]` = index of the next item member `i` receives.
    order: Vec<Item>,
    next: Vec<usize>,
    /// FIFO accept channels: (from, to) → (view, tags).
    chan: BTreeMap<(usize, usize), VecDeque<AcceptMsg>>,
    /// Accepts each member delivered: for the max-cut at a view change.
    received: BTreeMap<(usize, usize), usize>,
    sent: BTreeMap<(usize, usize), Vec<AcceptMsg>>,
    /// Pending log requests per member: (view, tag).
    logging: Vec<VecDeque<(u64, CompletionTag)>>,
    /// Accepts emitted: (view, tag) → acceptors.
    accepted: BTreeMap<(u64, u64), BTreeSet<usize>>,
    /// Acceptors per view.
    acceptors: BTreeMap<u64, Vec<usize>>,
    delivered: Vec<Vec<u64>>,
}

impl Sim {
    fn new(n: usize, phi: usize, items: Vec<Item>) -> Sim {
        let members: Vec<Address> = (0..n).map(addr).collect();
        let mut cores: Vec<SafeCore> = members.iter().map(|m| SafeCore::new(*m, phi)).collect();
        for c in &mut cores {
            c.install(1, &members);
        }
        let mut s = Sim {
            cores,
            alive: vec![true; n],
            members,
            view: 1,
            order: items,
            next: vec![0; n],
            chan: BTreeMap::new(),
            received: BTreeMap::new(),
            sent: BTreeMap::new(),
            logging: vec![VecDeque::new(); n],
            accepted: BTreeMap::new(),
            acceptors: BTreeMap::new(),
            delivered: vec![Vec::new(); n],
        };
        s.acceptors.insert(1, (0..phi.min(n)).collect());
        for i in 0..n {
            s.pump(i);
        }
        s
    }

    fn live(&self) -> Vec<usize> {
        (0..self.cores.len()).filter(|i| self.alive[*i]).collect()
    }

    fn id(item: &Item) -> u64 {
        match item {
            Item::Plain(n) | Item::Safe(n) => *n,
        }
    }

    fn pump(&mut self, i: usize) {
        while let Some(a) = self.cores[i].poll_action() {
            match a {
                SafeAction::Log { view, tag, .. } => self.logging[i].push_back((view, tag)),
                SafeAction::Accept { view, tags } => {
                    for t in &tags {
                        self.accepted.entry((view, t.msg_id)).or_default().insert(i);
                    }
                    for j in self.live() {
                        self.chan
                            .entry((i, j))
                            .or_default()
                            .push_back((view, tags.clone()));
                        self.sent
                            .entry((i, j))
                            .or_default()
                            .push((view, tags.clone()));
                    }
                }
                SafeAction::Deliver { payload, .. } => {
                    let n = u64::from_le_bytes(payload.try_into().unwrap());
                    self.delivered[i].push(n);
                }
                SafeAction::DeliverSafe { tag, payload, .. } => {
                    let n = u64::from_le_bytes(payload.try_into().unwrap());
                    assert_eq!(n, tag.msg_id);
                    // Paxos: some view's acceptors all logged it before anyone delivers it.
                    let ok = self.acceptors.iter().any(|(v, acc)| {
                        let got = self.accepted.get(&(*v, n)).cloned().unwrap_or_default();
                        !acc.is_empty() && acc.iter().all(|a| got.contains(a))
                    });
                    assert!(
                        ok,
                        "member {i} delivered SafeSend {n} before Φ acceptors logged it"
                    );
                    self.delivered[i].push(n);
                }
            }
        }
    }

    /// One step chosen by `pick`; false if nothing could be done.
    fn step(&mut self, pick: usize) -> bool {
        let mut choices = Vec::new();
        for i in self.live() {
            if self.next[i] < self.order.len() {
                choices.push((0, i, 0));
            }
            if !self.logging[i].is_empty() {
                choices.push((1, i, 0));
            }
            for j in self.live() {
                if self.chan.get(&(j, i)).is_some_and(|q| !q.is_empty()) {
                    choices.push((2, i, j));
                }
            }
        }
        if choices.is_empty() {
            return false;
        }
        let (kind, i, j) = choices[pick % choices.len()];
        match kind {
            0 => {
                let item = self.order[self.next[i]].clone();
                self.next[i] += 1;
                let payload = Self::id(&item).to_le_bytes().to_vec();
                match item {
                    Item::Plain(_) => self.cores[i].on_ordered(addr(0), payload),
                    Item::Safe(n) => self.cores[i].on_safe(addr(0), tag(n), payload),
                }
            }
            1 => {
                let (view, t) = self.logging[i].pop_front().unwrap();
                self.cores[i].on_logged(view, &[t]);
            }
            _ => {
                let (view, tags) = self.chan.get_mut(&(j, i)).unwrap().pop_front().unwrap();
                *self.received.entry((j, i)).or_default() += 1;
                self.cores[i].on_accept(addr(j), view, &tags);
            }
        }
        self.pump(i);
        true
    }

    /// Member `victim` fails; the flush gives every survivor the same messages (max cut),
    /// then every survivor installs the next view.
    fn view_change(&mut self, victim: usize) {
        self.alive[victim] = false;
        let live = self.live();
        // Ordered items: everybody gets what any survivor got.
        let cut = live.iter().map(|i| self.next[*i]).max().unwrap_or(0);
        // Accepts of the ending view: a survivor's are all delivered; the victim's as far as
        // any survivor received them.
        for s in (0..self.cores.len()).collect::<Vec<_>>() {
            let upto = if s == victim {
                live.iter()
                    .map(|i| self.received.get(&(s, *i)).copied().unwrap_or(0))
                    .max()
                    .unwrap_or(0)
            } else {
                usize::MAX
            };
            for &i in &live {
                let sent = self.sent.get(&(s, i)).cloned().unwrap_or_default();
                let from = self.received.get(&(s, i)).copied().unwrap_or(0);
                for (view, tags) in sent.iter().take(upto).skip(from) {
                    self.cores[i].on_accept(addr(s), *view, tags);
                }
                if s != victim || upto > from {
                    self.received.insert((s, i), from.max(upto.min(sent.len())));
                }
                self.chan.remove(&(s, i));
            }
        }
        for &i in &live {
            while self.next[i] < cut {
                let item = self.order[self.next[i]].clone();
                self.next[i] += 1;
                let payload = Self::id(&item).to_le_bytes().to_vec();
                match item {
                    Item::Plain(_) => self.cores[i].on_ordered(addr(0), payload),
                    Item::Safe(n) => self.cores[i].on_safe(addr(0), tag(n), payload),
                }
            }
            self.pump(i);
        }
        // Pending logging of the old view is moot (its reports will be stale).
        self.view += 1;
        let members: Vec<Address> = live.iter().map(|i| self.members[*i]).collect();
        for &i in &live {
            self.cores[i].install(self.view, &members);
        }
        let acc: Vec<usize> = self.cores[live[0]]
            .acceptors()
            .iter()
            .map(|a| self.members.iter().position(|m| m == a).unwrap())
            .collect();
        self.acceptors.insert(self.view, acc);
        self.sent.clear();
        self.received.clear();
        for &i in &live {
            self.pump(i);
        }
    }
}

fn items() -> impl Strategy<Value = Vec<Item>> {
    proptest::collection::vec(any::<bool>(), 1..24).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, safe)| {
                if safe {
                    Item::Safe(i as u64)
                } else {
                    Item::Plain(i as u64)
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Every live member delivers every message, in the total order; nobody delivers a
    /// SafeSend before all acceptors of some view logged it; a failed member delivered a
    /// prefix.
    #[test]
    fn same_order_everywhere_and_never_early(
        n in 2usize..5,
        phi in 1usize..5,
        order in items(),
        picks in proptest::collection::vec(any::<usize>(), 0..400),
        change in proptest::option::of((0usize..400, 0usize..5)),
    ) {
        let mut sim = Sim::new(n, phi, order.clone());
        for (k, p) in picks.iter().enumerate() {
            if let Some((at, victim)) = change {
                if k == at && sim.view == 1 {
                    sim.view_change(victim % n);
                }
            }
            sim.step(*p);
        }
        if let Some((_, victim)) = change {
            if sim.view == 1 {
                sim.view_change(victim % n);
            }
        }
        // Run to quiescence.
        let mut k = 0usize;
        while sim.step(k) {
            k = k.wrapping_add(7);
        }
        let all: Vec<u64> = order.iter().map(Sim::id).collect();
        for i in 0..n {
            if sim.alive[i] {
                prop_assert_eq!(&sim.delivered[i], &all, "member {} delivered all, in order", i);
                prop_assert_eq!(sim.cores[i].held(), 0);
            } else {
                prop_assert_eq!(&sim.delivered[i][..], &all[..sim.delivered[i].len()]);
            }
        }
    }
}
