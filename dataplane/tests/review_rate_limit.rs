//! Review: the leaky-bucket rate limiter.
//!
//! Run the proof with:
//! `cargo test -p vsync-dataplane --test review_rate_limit -- --ignored --nocapture`
//!
//! Each test here proved a bug found in the data-plane review; the bugs are fixed and the
//! tests stay as regression tests (their doc comments describe the original failure).

use std::time::Duration;

use vsync_dataplane::protocol::{RateLimit, RateLimiter};
use vsync_dataplane::Timestamp;

fn ms(n: u64) -> Timestamp {
    Timestamp::from_nanos(n * 1_000_000)
}

/// `RateLimiter::advance` applies at most six periods and then "skips ahead" without paying
/// down `debt`. A message larger than a period's byte grant leaves the bucket in debt; if the
/// sender then idles, the idle periods do not repay it, and the next send is refused for as
/// many periods as the debt still covers (here: 100 s idle at 1000 B/100 ms = 1 MB of
/// grants, yet a 1-byte message waits another ~9 s).
#[test]
fn debt_is_repaid_by_idle_periods() {
    let limit = RateLimit {
        messages: None,
        bytes: Some(1000),
        period: Duration::from_millis(100),
    };
    let mut r = RateLimiter::new(limit, ms(0));
    assert!(
        r.try_take(ms(0), 100_000),
        "a large message may go once, leaving debt"
    );
    // 100 s idle: 1000 periods × 1000 bytes = 1 MB of grants against 99 KB of debt.
    let mut t = 100_000;
    let mut waited = 0;
    while !r.try_take(ms(t), 1) {
        t += 100;
        waited += 100;
        assert!(waited < 60_000);
    }
    println!("after 100 s idle, a 1-byte message still waited {waited} ms");
    assert_eq!(waited, 0);
}
