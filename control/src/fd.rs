//! The heartbeat failure detector ([`FailureDetector`]): per monitored process, when it was
//! last heard from; who has been silent for longer than the timeout; plus failures the
//! application reports itself (Isis² `HasFailed`).
//!
//! It only *suspects*. The oracle turns a suspicion into a decision by committing
//! `Command::ProcessFailed`, after which the process is excluded from every group and poisoned
//! if it reappears. Sans-IO: the driver passes `now` in, sends a heartbeat whenever
//! [`FailureDetector::heartbeat_due`] says so, and calls [`FailureDetector::on_timeout`] by
//! [`FailureDetector::poll_timeout`].
//!
//! # Defaults (data centre)
//!
//! Heartbeats every **100 ms**, suspicion after **1 s** of silence (`VSYNC_FD_INTERVAL_MS`,
//! `VSYNC_FD_TIMEOUT_MS`). Why: data-centre round trips are well under a millisecond, so
//! silence is caused by a crash, a partition or a stalled process (GC, swapping, a long
//! upcall), not by latency. A 1 s timeout spans ten heartbeats — a false suspicion needs ten
//! consecutive losses (about 10⁻²⁰ at 1% independent loss) or a stall of a full second —
//! while a real crash is acted on in about a second instead of Isis²'s 15–45 s. Ten
//! heartbeats a second per monitored process is negligible traffic. Raise the timeout for
//! applications with long blocking upcalls (the "I've been poisoned" case in the Isis² guide).
//! A newly monitored process gets one full timeout of grace from when monitoring starts.

use std::collections::BTreeMap;
use std::time::Duration;

use vsync_dataplane::{MemberId, Timestamp};

/// Failure-detector timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdConfig {
    /// How often this process sends heartbeats.
    pub interval: Duration,
    /// Silence after which a monitored process is suspected.
    pub timeout: Duration,
}

impl Default for FdConfig {
    /// 100 ms / 1 s (see the module docs for why).
    fn default() -> Self {
        FdConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Why a process is suspected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuspectReason {
    /// Silent for longer than the timeout.
    Timeout {
        /// How long it had been silent.
        silent: Duration,
    },
    /// Reported by a member (`HasFailed`).
    Reported {
        /// The reporter.
        by: MemberId,
    },
    /// A newer incarnation of the same process was heard from: this one crashed.
    Restarted {
        /// The newer incarnation.
        new: MemberId,
    },
}

/// A suspicion to be decided by the oracle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suspect {
    /// The suspected incarnation.
    pub member: MemberId,
    /// Why.
    pub reason: SuspectReason,
}

/// What a received heartbeat means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatVerdict {
    /// From a monitored, unsuspected incarnation: recorded.
    Alive,
    /// From a process that is not monitored: ignored.
    Unmonitored,
    /// From an older incarnation than the monitored one: it should be poisoned.
    Stale {
        /// The monitored incarnation.
        current: MemberId,
    },
    /// From a newer incarnation: the old one is now suspected and the new one monitored.
    NewIncarnation {
        /// The incarnation now suspected.
        old: MemberId,
    },
    /// From an incarnation already suspected: it stays suspected (the oracle decides).
    Suspected,
}

#[derive(Clone, Copy, Debug)]
struct Monitored {
    member: MemberId,
    last_heard: Timestamp,
    suspected: bool,
}

/// Heartbeat bookkeeping for the processes this node monitors.
#[derive(Clone, Debug)]
pub struct FailureDetector {
    config: FdConfig,
    monitored: BTreeMap<u32, Monitored>,
    queued: Vec<Suspect>,
    next_send: Timestamp,
}

impl FailureDetector {
    /// A detector monitoring nobody, due to send its first heartbeat at once.
    pub fn new(config: FdConfig) -> Self {
        FailureDetector {
            config,
            monitored: BTreeMap::new(),
            queued: Vec::new(),
            next_send: Timestamp::ZERO,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &FdConfig {
        &self.config
    }

    /// Starts monitoring `member` (replacing any other incarnation of the process), with a
    /// full timeout of grace from `now`.
    pub fn monitor(&mut self, now: Timestamp, member: MemberId) {
        self.monitored.insert(
            member.process(),
            Monitored {
                member,
                last_heard: now,
                suspected: false,
            },
        );
    }

    /// Stops monitoring `member` (e.g. after the oracle excluded it). False if it was not.
    pub fn unmonitor(&mut self, member: MemberId) -> bool {
        match self.monitored.get(&member.process()) {
            Some(m) if m.member == member => {
                self.monitored.remove(&member.process());
                true
            }
            _ => false,
        }
    }

    /// The monitored incarnations, in process order.
    pub fn monitored(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.monitored.values().map(|m| m.member)
    }

    /// True if `member` is monitored and suspected.
    pub fn is_suspected(&self, member: MemberId) -> bool {
        self.monitored
            .get(&member.process())
            .is_some_and(|m| m.member == member && m.suspected)
    }

    /// Records a heartbeat (any packet from `from` may count as one).
    pub fn on_heartbeat(&mut self, now: Timestamp, from: MemberId) -> HeartbeatVerdict {
        let Some(m) = self.monitored.get_mut(&from.process()) else {
            return HeartbeatVerdict::Unmonitored;
        };
        match from.incarnation().cmp(&m.member.incarnation()) {
            std::cmp::Ordering::Less => HeartbeatVerdict::Stale { current: m.member },
            std::cmp::Ordering::Greater => {
                let old = m.member;
                if !m.suspected {
                    self.queued.push(Suspect {
                        member: old,
                        reason: SuspectReason::Restarted { new: from },
                    });
                }
                *m = Monitored {
                    member: from,
                    last_heard: now,
                    suspected: false,
                };
                HeartbeatVerdict::NewIncarnation { old }
            }
            std::cmp::Ordering::Equal if m.suspected => HeartbeatVerdict::Suspected,
            std::cmp::Ordering::Equal => {
                m.last_heard = m.last_heard.max(now);
                HeartbeatVerdict::Alive
            }
        }
    }

    /// Application-reported failure (`HasFailed`): `who` is suspected at the next
    /// [`FailureDetector::on_timeout`]. False if `who` is not monitored or already suspected.
    pub fn report_failed(&mut self, who: MemberId, by: MemberId) -> bool {
        match self.monitored.get_mut(&who.process()) {
            Some(m) if m.member == who && !m.suspected => {
                m.suspected = true;
                self.queued.push(Suspect {
                    member: who,
                    reason: SuspectReason::Reported { by },
                });
                true
            }
            _ => false,
        }
    }

    /// New suspicions as of `now` (each incarnation is reported once).
    pub fn on_timeout(&mut self, now: Timestamp) -> Vec<Suspect> {
        let mut out = std::mem::take(&mut self.queued);
        for m in self.monitored.values_mut() {
            if m.suspected {
                continue;
            }
            let silent = now.saturating_since(m.last_heard);
            if silent > self.config.timeout {
                m.suspected = true;
                out.push(Suspect {
                    member: m.member,
                    reason: SuspectReason::Timeout { silent },
                });
            }
        }
        out
    }

    /// True when this node should send a heartbeat now; schedules the next one.
    pub fn heartbeat_due(&mut self, now: Timestamp) -> bool {
        if now >= self.next_send {
            self.next_send = now + self.config.interval;
            true
        } else {
            false
        }
    }

    /// The next time [`FailureDetector::on_timeout`] or [`FailureDetector::heartbeat_due`]
    /// has work: the next heartbeat send, the earliest possible expiry, or "now"
    /// (`Timestamp::ZERO`) if reported suspicions are queued.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if !self.queued.is_empty() {
            return Some(Timestamp::ZERO);
        }
        let expiry = self
            .monitored
            .values()
            .filter(|m| !m.suspected)
            .map(|m| m.last_heard + self.config.timeout + Duration::from_nanos(1))
            .min();
        Some(expiry.map_or(self.next_send, |e| e.min(self.next_send)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_nanos(n * 1_000_000)
    }
    fn m(p: u32, i: u32) -> MemberId {
        MemberId::new(p, i)
    }

    #[test]
    fn silence_beyond_timeout_is_suspected_once() {
        let mut fd = FailureDetector::new(FdConfig::default());
        fd.monitor(ms(0), m(1, 1));
        fd.monitor(ms(0), m(2, 1));
        for t in (100..=1500).step_by(100) {
            assert_eq!(fd.on_heartbeat(ms(t), m(1, 1)), HeartbeatVerdict::Alive);
        }
        assert!(fd.on_timeout(ms(1000)).is_empty());
        let s = fd.on_timeout(ms(1001));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].member, m(2, 1));
        assert!(fd.on_timeout(ms(5000)).iter().all(|s| s.member != m(2, 1)));
        assert_eq!(
            fd.on_heartbeat(ms(5001), m(2, 1)),
            HeartbeatVerdict::Suspected
        );
        assert!(fd.is_suspected(m(2, 1)));
    }

    #[test]
    fn poll_timeout_points_at_earliest_expiry() {
        let mut fd = FailureDetector::new(FdConfig::default());
        assert!(fd.heartbeat_due(ms(0)));
        assert!(!fd.heartbeat_due(ms(50)));
        fd.monitor(ms(0), m(1, 1));
        assert_eq!(fd.poll_timeout(), Some(ms(100)), "next send first");
        assert!(fd.heartbeat_due(ms(100)));
        fd.on_heartbeat(ms(150), m(1, 1));
        let mut t = fd.poll_timeout().unwrap();
        while fd.heartbeat_due(t) {
            t = fd.poll_timeout().unwrap();
        }
        assert_eq!(t, ms(1150) + Duration::from_nanos(1));
        assert_eq!(fd.on_timeout(t).len(), 1);
    }

    #[test]
    fn reported_and_restarted_processes() {
        let mut fd = FailureDetector::new(FdConfig::default());
        fd.monitor(ms(0), m(1, 1));
        fd.monitor(ms(0), m(2, 1));
        assert!(fd.report_failed(m(1, 1), m(2, 1)));
        assert!(!fd.report_failed(m(1, 1), m(2, 1)), "once");
        assert_eq!(fd.poll_timeout(), Some(Timestamp::ZERO));
        assert_eq!(
            fd.on_heartbeat(ms(10), m(2, 7)),
            HeartbeatVerdict::NewIncarnation { old: m(2, 1) }
        );
        assert_eq!(
            fd.on_heartbeat(ms(11), m(2, 3)),
            HeartbeatVerdict::Stale { current: m(2, 7) }
        );
        let s = fd.on_timeout(ms(20));
        assert_eq!(
            s,
            vec![
                Suspect {
                    member: m(1, 1),
                    reason: SuspectReason::Reported { by: m(2, 1) }
                },
                Suspect {
                    member: m(2, 1),
                    reason: SuspectReason::Restarted { new: m(2, 7) }
                },
            ]
        );
        assert!(fd.unmonitor(m(1, 1)));
        assert!(!fd.unmonitor(m(1, 1)));
        assert_eq!(
            fd.on_heartbeat(ms(30), m(1, 1)),
            HeartbeatVerdict::Unmonitored
        );
    }

    proptest! {
        /// A process heard from at least every `timeout` is never suspected; one never heard
        /// from is suspected by `timeout` after monitoring started.
        #[test]
        fn no_false_suspicion_with_timely_heartbeats(gaps in proptest::collection::vec(1u64..=1000, 1..50)) {
            let mut fd = FailureDetector::new(FdConfig::default());
            fd.monitor(ms(0), m(1, 1));
            fd.monitor(ms(0), m(2, 1));
            let mut t = 0;
            let mut suspected_2 = false;
            for g in gaps {
                t += g;
                fd.on_heartbeat(ms(t), m(1, 1));
                for s in fd.on_timeout(ms(t)) {
                    prop_assert_ne!(s.member, m(1, 1));
                    suspected_2 |= s.member == m(2, 1);
                }
            }
            prop_assert_eq!(suspected_2, t > 1000);
        }
    }
}
