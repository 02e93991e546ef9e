//! Review: hot-path costs that grow with the group size. Measurements, printed; the ignored
//! test asserts a scaling bound the code does not meet today.
//!
//! `cargo test -p vsync-dataplane --test review_perf -- --ignored --nocapture`
//! (opt-level 1 test profile: absolute numbers are pessimistic, ratios are what matter).

use std::time::{Duration, Instant};

use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::{Delivery, Endpoint, GroupSpec, Protocol};
use vsync_dataplane::{GroupId, MemberId, Timestamp, ViewId};

const G: GroupId = GroupId(5);

fn endpoint(members: usize) -> Endpoint<impl FnMut(&Delivery<'_>) -> bool> {
    let ids: Vec<MemberId> = (1..=members as u32).map(|i| MemberId::new(i, 1)).collect();
    let mut e = Endpoint::new(
        ProtocolConfig::default(),
        ids[0],
        1,
        1,
        |_: &Delivery<'_>| true,
    );
    e.join(
        G,
        GroupSpec {
            view: ViewId(1),
            members: ids,
            multicast: true,
            key: None,
        },
    );
    e
}

/// ns per 64-byte message to admit and pack (no receivers answer; the window is large enough).
fn pack_cost(members: usize) -> f64 {
    let mut e = endpoint(members);
    let mut buf = vec![0u8; 1472];
    let n = 8000;
    let start = Instant::now();
    for _ in 0..n {
        e.try_send(Timestamp::ZERO, G, &[1u8; 64]).unwrap();
    }
    while e.poll_transmit(Timestamp::ZERO, &mut buf).is_some() {}
    start.elapsed().as_nanos() as f64 / n as f64
}

/// ns per idle driver iteration (poll_timeout + poll_transmit returning None + poll_delivery).
fn idle_cost(members: usize) -> f64 {
    let mut e = endpoint(members);
    let mut buf = vec![0u8; 1472];
    let n = 20_000;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(e.poll_timeout());
        assert!(e.poll_transmit(Timestamp::ZERO, &mut buf).is_none());
        e.poll_delivery();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

#[test]
#[ignore = "PERF: every idle driver iteration scans all peers of all groups several times (O(G x P))"]
fn idle_iteration_cost_does_not_scale_with_group_size() {
    let _ = Duration::ZERO;
    let (p2, p256) = (pack_cost(2), pack_cost(256));
    let (i2, i256) = (idle_cost(2), idle_cost(256));
    println!(
        "admit+pack per 64-byte message: 2 members {p2:.0} ns, 256 members {p256:.0} ns ({:.1}x)",
        p256 / p2
    );
    println!(
        "idle driver iteration: 2 members {i2:.0} ns, 256 members {i256:.0} ns ({:.1}x)",
        i256 / i2
    );
    assert!(
        i256 < 10.0 * i2,
        "an idle poll_timeout + poll_transmit + poll_delivery costs O(peers)"
    );
}
