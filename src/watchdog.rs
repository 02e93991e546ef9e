//! The delivery watchdog (the manual's "Threads": a handler that blocks stops its group's
//! deliveries; Isis² eventually kills such a member with a poison pill).
//!
//! Each group's delivery thread stamps a delivery clock when an upcall starts and clears
//! it when the upcall returns. The system's driver looks at the clocks on every loop:
//!
//! * an upcall running longer than the **warning** threshold (`VSYNC_HANDLER_WARN_MS`,
//!   default 1000 ms, [`SystemBuilder::handler_warning`](crate::SystemBuilder::handler_warning))
//!   is reported once on stderr, naming the group and request code, and counted
//!   ([`System::blocked_handler_reports`](crate::System::blocked_handler_reports));
//! * an upcall running longer than the **stall limit** (`VSYNC_STALL_LIMIT_MS`, default
//!   60 000 ms, 0 = never, [`SystemBuilder::delivery_stall_limit`](crate::SystemBuilder::delivery_stall_limit))
//!   poisons this process: its calls fail with [`VsyncError::Poisoned`](crate::VsyncError)
//!   naming the stuck group, and it stops heartbeating, so the oracle excludes it and the
//!   other members see it fail and move on — the poison pill, applied by the stuck member to
//!   itself rather than after its messages pile up in every sender.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vsync_dataplane::GroupId;

/// Request code recorded for upcalls that are not messages (views, checkpoints).
pub(crate) const NOT_A_MESSAGE: u32 = u32::MAX;

/// When the running upcall of one group started (shared by its delivery thread and the
/// driver).
#[derive(Debug)]
pub(crate) struct DeliveryClock {
    origin: Instant,
    /// Milliseconds since `origin` plus one when the running upcall started; 0 when idle.
    since: AtomicU64,
    code: AtomicU32,
}

impl DeliveryClock {
    pub(crate) fn new() -> Self {
        DeliveryClock {
            origin: Instant::now(),
            since: AtomicU64::new(0),
            code: AtomicU32::new(NOT_A_MESSAGE),
        }
    }

    /// An upcall for request `code` starts.
    pub(crate) fn begin(&self, code: u32) {
        self.code.store(code, Ordering::Relaxed);
        let ms = self.origin.elapsed().as_millis() as u64 + 1;
        self.since.store(ms, Ordering::Release);
    }

    /// The upcall returned.
    pub(crate) fn end(&self) {
        self.since.store(0, Ordering::Release);
    }

    /// The running upcall's start stamp, how long it has run, and its request code.
    fn running(&self) -> Option<(u64, Duration, u32)> {
        let since = self.since.load(Ordering::Acquire);
        if since == 0 {
            return None;
        }
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        Some((
            since,
            Duration::from_millis(now.saturating_sub(since)),
            self.code.load(Ordering::Relaxed),
        ))
    }
}

/// Where the library's own reports go (Isis² `ISIS_LOGDIR` / `ISIS_MUTE`).
///
/// ```
/// use vsync::ReportSink;
/// assert_eq!(ReportSink::default(), ReportSink::Stderr);
/// let builder = vsync::System::builder().reports(ReportSink::Mute);
/// # let _ = builder;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ReportSink {
    /// Standard error (the default).
    #[default]
    Stderr,
    /// Appended to `vsync-<pid>.log` in this directory (`VSYNC_LOGDIR`).
    Dir(PathBuf),
    /// Nowhere (`VSYNC_MUTE=true`); the counters still count.
    Mute,
}

impl ReportSink {
    /// Writes one report line; a failing log file falls back to stderr.
    pub(crate) fn report(&self, line: &str) {
        match self {
            ReportSink::Mute => {}
            ReportSink::Stderr => eprintln!("vsync: {line}"),
            ReportSink::Dir(dir) => {
                let path = dir.join(format!("vsync-{}.log", std::process::id()));
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| writeln!(f, "vsync: {line}"));
                if written.is_err() {
                    eprintln!("vsync: {line} (could not write {})", path.display());
                }
            }
        }
    }
}

/// The driver's side: thresholds and what was already reported.
pub(crate) struct Watchdog {
    warn: Duration,
    limit: Option<Duration>,
    sink: ReportSink,
    reported: BTreeMap<GroupId, u64>,
}

impl Watchdog {
    pub(crate) fn new(warn: Duration, limit: Option<Duration>, sink: ReportSink) -> Self {
        Watchdog {
            warn,
            limit,
            sink,
            reported: BTreeMap::new(),
        }
    }

    /// Checks one group's clock. Returns `Err(reason)` when the stall limit is passed (the
    /// process must be poisoned), `Ok(true)` when a new warning was reported.
    pub(crate) fn check(
        &mut self,
        group: GroupId,
        name: &str,
        clock: &DeliveryClock,
    ) -> Result<bool, String> {
        let Some((since, ran, code)) = clock.running() else {
            return Ok(false);
        };
        let what = if code == NOT_A_MESSAGE {
            "a view or checkpoint callback".to_string()
        } else {
            format!("the handler of request code {code}")
        };
        if self.limit.is_some_and(|l| ran >= l) {
            let why = format!(
                "group {name:?}: {what} has blocked its delivery thread for {:.1} s \
                 (VSYNC_STALL_LIMIT_MS): poison pill",
                ran.as_secs_f64()
            );
            self.sink.report(&why);
            return Err(why);
        }
        if ran >= self.warn && self.reported.get(&group) != Some(&since) {
            self.reported.insert(group, since);
            self.sink.report(&format!(
                "group {name:?}: {what} has been running for {:.1} s; deliveries to this member \
                 are held behind it",
                ran.as_secs_f64()
            ));
            return Ok(true);
        }
        Ok(false)
    }

    /// Forgets a group.
    pub(crate) fn forget(&mut self, group: GroupId) {
        self.reported.remove(&group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_upcall_then_poisons() {
        let c = DeliveryClock::new();
        let dir = std::env::temp_dir().join(format!("vsync-watchdog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sink = ReportSink::Dir(dir.clone());
        let mut w = Watchdog::new(Duration::ZERO, Some(Duration::from_millis(50)), sink);
        assert_eq!(w.check(GroupId(1), "g", &c), Ok(false), "idle");
        c.begin(7);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(w.check(GroupId(1), "g", &c), Ok(true));
        assert_eq!(w.check(GroupId(1), "g", &c), Ok(false), "reported once");
        std::thread::sleep(Duration::from_millis(60));
        let e = w.check(GroupId(1), "g", &c).unwrap_err();
        assert!(e.contains("request code 7"), "{e}");
        c.end();
        assert_eq!(w.check(GroupId(1), "g", &c), Ok(false));
        let log =
            std::fs::read_to_string(dir.join(format!("vsync-{}.log", std::process::id()))).unwrap();
        assert_eq!(
            log.lines().count(),
            2,
            "the warning and the poison pill: {log}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let mut never = Watchdog::new(Duration::from_secs(9), None, ReportSink::Mute);
        c.begin(NOT_A_MESSAGE);
        assert_eq!(never.check(GroupId(1), "g", &c), Ok(false));
    }
}
