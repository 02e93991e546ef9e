//! The Isis² leaky-bucket rate limiter (`SetRateLimit`).
//!
//! Every period `rate` new tokens enter the bucket; at each period boundary every unused
//! token's value is halved (the leak), and tokens older than five periods are gone. An idle
//! bucket with a rate of 20 therefore holds 20 + 10 + 5 + 2 + 1 = 38 tokens, as in the manual.
//! A message needs one message token and one byte token per byte. A message larger than a
//! whole period's byte grant may go once the bucket holds at least one period's grant, leaving
//! the bucket in debt (so the long-run byte rate still holds). Off by default.

use std::time::Duration;

use crate::Timestamp;

/// The shortest period the manual allows.
pub const MIN_PERIOD: Duration = Duration::from_millis(50);
const AGES: usize = 5;

/// A rate limit: at most `messages` messages and `bytes` bytes per `period` on average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages per period (`None` = unlimited).
    pub messages: Option<u64>,
    /// Bytes per period (`None` = unlimited).
    pub bytes: Option<u64>,
    /// The period (at least 50 ms; the manual's default is 1000 ms).
    pub period: Duration,
}

impl RateLimit {
    /// Checks the limit's parameters; the error names the offending parameter.
    pub fn validate(&self) -> Result<(), String> {
        if self.period < MIN_PERIOD {
            return Err(format!(
                "rate limit period {:?} is below the minimum of {:?}",
                self.period, MIN_PERIOD
            ));
        }
        if self.messages == Some(0) || self.bytes == Some(0) {
            return Err("rate limit of 0 messages or 0 bytes per period would never send".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct Bucket {
    rate: u64,
    ages: [u64; AGES],
    debt: u64,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        let mut ages = [0; AGES];
        ages[0] = rate;
        Bucket {
            rate,
            ages,
            debt: 0,
        }
    }
    fn period(&mut self) {
        for i in (1..AGES).rev() {
            self.ages[i] = self.ages[i - 1] / 2;
        }
        let fresh = self.rate.saturating_sub(self.debt);
        self.debt -= self.rate - fresh;
        self.ages[0] = fresh;
    }
    fn total(&self) -> u64 {
        self.ages.iter().sum()
    }
    fn can_take(&self, n: u64) -> bool {
        self.debt == 0 && (self.total() >= n || self.total() >= self.rate)
    }
    fn take(&mut self, mut n: u64) {
        for i in (0..AGES).rev() {
            let t = self.ages[i].min(n);
            self.ages[i] -= t;
            n -= t;
        }
        self.debt += n;
    }
}

/// A running limiter for one sender in one group.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    next_period: Timestamp,
}

impl RateLimiter {
    /// Starts a limiter at `now` with a full first grant.
    pub fn new(limit: RateLimit, now: Timestamp) -> Self {
        RateLimiter {
            limit,
            messages: limit.messages.map(Bucket::new),
            bytes: limit.bytes.map(Bucket::new),
            next_period: now + limit.period,
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    fn advance(&mut self, now: Timestamp) {
        let mut periods = 0;
        while now >= self.next_period {
            self.next_period = self.next_period + self.limit.period;
            periods += 1;
            if periods > AGES + 1 {
                // Long idle: skip ahead, but let the skipped periods repay any debt and fill
                // the bucket (no more periods than that matter).
                let behind = now.saturating_since(self.next_period).as_nanos() as u64;
                let p = self.limit.period.as_nanos() as u64;
                let skipped = behind / p + 1;
                self.next_period = self.next_period + Duration::from_nanos(skipped * p);
                for b in self.messages.iter_mut().chain(self.bytes.iter_mut()) {
                    let needed = b.debt.div_ceil(b.rate.max(1)) + AGES as u64;
                    for _ in 0..skipped.min(needed) {
                        b.period();
                    }
                }
                break;
            }
            self.messages
                .iter_mut()
                .chain(self.bytes.iter_mut())
                .for_each(Bucket::period);
        }
    }

    /// Takes tokens for one message of `len` bytes if available at `now`.
    pub fn try_take(&mut self, now: Timestamp, len: usize) -> bool {
        self.advance(now);
        let ok = self.messages.as_ref().is_none_or(|b| b.can_take(1))
            && self.bytes.as_ref().is_none_or(|b| b.can_take(len as u64));
        if ok {
            if let Some(b) = &mut self.messages {
                b.take(1);
            }
            if let Some(b) = &mut self.bytes {
                b.take(len as u64);
            }
        }
        ok
    }

    /// When new tokens next arrive.
    pub fn next_refill(&self) -> Timestamp {
        self.next_period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    fn limit(messages: u64) -> RateLimit {
        RateLimit {
            messages: Some(messages),
            bytes: None,
            period: Duration::from_secs(1),
        }
    }

    #[test]
    fn idle_bucket_holds_38_tokens_for_rate_20() {
        let mut r = RateLimiter::new(limit(20), at(0));
        // Five idle periods, then a burst.
        let now = at(5_000);
        let mut sent = 0;
        while r.try_take(now, 100) {
            sent += 1;
        }
        assert_eq!(sent, 38);
        // The 39th waits for the next grant of 20.
        assert!(!r.try_take(at(5_999), 100));
        let mut next = 0;
        while r.try_take(at(6_000), 100) {
            next += 1;
        }
        assert_eq!(next, 20);
    }

    #[test]
    fn steady_state_rate_holds() {
        let mut r = RateLimiter::new(limit(20), at(0));
        let mut sent = 0;
        for ms in (0..10_000).step_by(10) {
            while r.try_take(at(ms), 10) {
                sent += 1;
            }
        }
        // 10 periods at 20 per period, plus the initial grant.
        assert!((200..=220).contains(&sent), "sent {sent}");
    }

    #[test]
    fn byte_limit_with_large_messages_keeps_long_run_rate() {
        let lim = RateLimit {
            messages: None,
            bytes: Some(1000),
            period: Duration::from_millis(100),
        };
        let mut r = RateLimiter::new(lim, at(0));
        let mut bytes = 0;
        for ms in 0..10_000 {
            if r.try_take(at(ms), 2500) {
                bytes += 2500;
            }
        }
        // Never above 100 periods × 1000 bytes plus the initial grant; below it by what the
        // leak (halving of residual tokens while saving up for a large message) takes.
        assert!((80_000..=105_000).contains(&bytes), "bytes {bytes}");
    }

    #[test]
    fn validation_names_the_problem() {
        let bad = RateLimit {
            messages: Some(5),
            bytes: None,
            period: Duration::from_millis(10),
        };
        assert!(bad.validate().unwrap_err().contains("minimum"));
        assert!(limit(20).validate().is_ok());
    }
}
