//! Review test of the endpoint's view-change half: a flush round restarted after its cut.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::{CutEntry, Delivery, Destination, Endpoint, GroupSpec, Protocol};
use vsync_dataplane::{GroupId, MemberId, Timestamp, ViewId};

const G: GroupId = GroupId(42);

fn m(i: u32) -> MemberId {
    MemberId::new(i, 1)
}

type Log = Rc<RefCell<Vec<(MemberId, Vec<u8>)>>>;
type Sink = Box<dyn FnMut(&Delivery<'_>) -> bool>;

fn endpoint(i: u32, log: &Log) -> Endpoint<Sink> {
    let l = log.clone();
    let sink: Sink = Box::new(move |d: &Delivery<'_>| {
        l.borrow_mut().push((d.sender, d.payload.to_vec()));
        true
    });
    let mut e = Endpoint::new(ProtocolConfig::default(), m(i), 1, u64::from(i), sink);
    e.join(
        G,
        GroupSpec {
            view: ViewId(1),
            members: vec![m(1), m(2), m(3)],
            multicast: false,
            key: None,
        },
    );
    e
}

fn addr(i: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7000 + i as u16))
}

/// Every datagram `from` wants to send now, with its destinations (member numbers).
fn outputs(e: &mut Endpoint<Sink>, now: Timestamp, me: u32) -> Vec<(Vec<u32>, Vec<u8>)> {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while let Some(t) = e.poll_transmit(now, &mut buf) {
        let to = match t.destination {
            Destination::Member(x) => vec![x.process()],
            Destination::Group(_) => [1u32, 2, 3].into_iter().filter(|x| *x != me).collect(),
        };
        out.push((to, buf[..t.len].to_vec()));
    }
    out
}

/// After a cut, the flush restarts in a new round (the holder was declared failed) and the
/// member re-wedges and reports its positions again. The endpoint keeps the old round's
/// limits (raised to the old cut) and keeps accepting relayed frames, so it goes on taking
/// frames *beyond the positions it just reported*. The new cut — the maximum of the new
/// reports — does not cover them, yet the member has delivered them: the member ends the view
/// with messages other survivors (whose reports formed the cut) never deliver, or, if the new
/// cut names the stream below what it now holds, `flush` refuses it (`BadCut`) and the member
/// can never finish the flush.
#[test]
fn rewedge_for_a_new_round_freezes_streams_at_the_reported_positions() {
    let (la, lb, lc): (Log, Log, Log) = Default::default();
    let mut a = endpoint(1, &la);
    let mut b = endpoint(2, &lb);
    let mut c = endpoint(3, &lc);
    let mut now = Timestamp::from_nanos(1_000);
    // Member 3 sends; only member 1 receives (3 → 2 is cut off), then 3 crashes.
    for i in 0..10u8 {
        c.try_send(now, G, &[i; 100]).unwrap();
    }
    for (to, mut d) in outputs(&mut c, now, 3) {
        if to.contains(&1) {
            a.handle_datagram(now, addr(3), &mut d);
        }
    }
    assert_eq!(la.borrow().iter().filter(|x| x.0 == m(3)).count(), 10);
    // Round 1: wedge, reports, cut = (3 through 10, holder 1).
    let ra = a.wedge(G, ViewId(1)).unwrap();
    let rb = b.wedge(G, ViewId(1)).unwrap();
    let pos = |r: &vsync_dataplane::protocol::WedgeReport, s: MemberId| {
        r.positions.iter().find(|x| x.0 == s).unwrap().1
    };
    assert_eq!(pos(&ra, m(3)), 10);
    assert_eq!(pos(&rb, m(3)), 0);
    let cut1 = vec![CutEntry {
        sender: m(3),
        through: 10,
        holder: m(1),
    }];
    a.flush(G, ViewId(1), &cut1).unwrap();
    b.flush(G, ViewId(1), &cut1).unwrap();
    // Member 2 asks member 1 for the frames; member 1 answers (the answer is in flight).
    now = now + Duration::from_millis(1);
    for (to, mut d) in outputs(&mut b, now, 2) {
        if to.contains(&1) {
            a.handle_datagram(now, addr(2), &mut d);
        }
    }
    let in_flight: Vec<Vec<u8>> = outputs(&mut a, now, 1)
        .into_iter()
        .filter(|(to, _)| to.contains(&2))
        .map(|x| x.1)
        .collect();
    assert!(!in_flight.is_empty());
    // Member 1 is declared failed: round 2. Member 2 re-wedges and reports what it holds.
    let rb2 = b.wedge(G, ViewId(1)).unwrap();
    let reported = pos(&rb2, m(3));
    assert_eq!(reported, 0);
    // Member 1's relays arrive after that report.
    now = now + Duration::from_millis(1);
    for mut d in in_flight {
        b.handle_datagram(now, addr(1), &mut d);
    }
    let after = pos(&b.wedge(G, ViewId(1)).unwrap(), m(3));
    let delivered = lb.borrow().iter().filter(|x| x.0 == m(3)).count();
    assert!(
        after <= reported && delivered == 0,
        "after reporting {reported} frames of member 3 for the new round, member 2 went on \
         accepting old-round relays: it now holds {after} and delivered {delivered} messages \
         the new round's cut (max of the new reports = {reported}) does not include"
    );
}
