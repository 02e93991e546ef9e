//! Turning member results into per-sender, per-receiver and aggregate figures, printed as a
//! text table or one JSON object.
//!
//! Definitions (all receivers are all members; a member never counts its own messages):
//! * **msgs/s, MB/s** (goodput) — unique messages (and their payload bytes, MB = 10⁶ B)
//!   delivered to a receiver whose send timestamp lies in the measured window, divided by
//!   the window length. The aggregate row sums receivers; `mb_per_s_per_receiver` is the
//!   mean.
//! * **latency** — delivery time minus send timestamp (one clock for the machine), for
//!   the same messages; reported in µs (hdrhistogram, 3 significant digits).
//! * **expected / delivered / lost** — over the whole run (warm-up included): expected is
//!   the sum of the other senders' sent counts, delivered the unique messages received
//!   from them, lost the difference.
//! * **duplicate / out_of_order** — deliveries of an already delivered sequence number /
//!   first deliveries of a sequence number lower than one already delivered.

use std::collections::BTreeMap;
use std::io::{self, Write};

use hdrhistogram::Histogram;

use crate::json::Json;
use crate::member::MemberResult;
use crate::transport::Mode;

/// A latency histogram in ns: 1 ns ..= 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds")
}

/// `[[value, count], …]` of the recorded buckets.
pub fn hist_to_json(h: &Histogram<u64>) -> Json {
    Json::Arr(
        h.iter_recorded()
            .map(|v| {
                Json::Arr(vec![
                    Json::UInt(v.value_iterated_to()),
                    Json::UInt(v.count_at_value()),
                ])
            })
            .collect(),
    )
}

/// Inverse of [`hist_to_json`] (`null` gives an empty histogram).
pub fn hist_from_json(j: &Json) -> Result<Histogram<u64>, String> {
    let mut h = new_histogram();
    if let Json::Null = j {
        return Ok(h);
    }
    for pair in j.as_array().ok_or("histogram: expected an array")? {
        let p = pair
            .as_array()
            .ok_or("histogram: expected [value, count]")?;
        match (
            p.first().and_then(Json::as_u64),
            p.get(1).and_then(Json::as_u64),
        ) {
            (Some(v), Some(c)) => h.saturating_record_n(v, c),
            _ => return Err("histogram: bad [value, count] pair".to_string()),
        }
    }
    Ok(h)
}

/// Percentiles of a latency histogram, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarises `h` (values in ns).
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    /// As a JSON object (µs, one decimal).
    pub fn to_json(&self) -> Json {
        let r = |v: f64| Json::Num((v * 10.0).round() / 10.0);
        Json::obj()
            .with("count", self.count)
            .with("mean", r(self.mean_us))
            .with("p50", r(self.p50_us))
            .with("p90", r(self.p90_us))
            .with("p99", r(self.p99_us))
            .with("p999", r(self.p999_us))
            .with("max", r(self.max_us))
    }
}

/// How a run was set up.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// Transport mode.
    pub mode: Mode,
    /// `"loopback"` (threads) or `"lab"` (one process per namespace host).
    pub topology: String,
    /// `"multicast"` or `"unicast"` (fan-out).
    pub transport: String,
    /// Group address:port (or the unicast base).
    pub group: String,
    /// Number of members.
    pub members: u32,
    /// Number of senders (members `0..senders`).
    pub senders: u32,
    /// Message size in bytes.
    pub size: usize,
    /// Measured window, seconds.
    pub duration_s: f64,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Requested `--rate` (0 = unpaced).
    pub rate: f64,
    /// Effective offered rate per sender, msgs/s (0 = unpaced).
    pub offered_rate: f64,
    /// How the offered rate came about.
    pub pacing: String,
    /// Injected loss, percent (in-process on loopback, network on the lab).
    pub loss_pct: f64,
    /// Ping-pong run.
    pub pingpong: bool,
}

/// One sender's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct SenderRow {
    /// Member index.
    pub index: u32,
    /// Messages sent over the whole run.
    pub sent: u64,
    /// Messages sent in the measured window per second.
    pub msgs_per_s: f64,
    /// `WouldBlock` results.
    pub would_block: u64,
}

impl SenderRow {
    /// The row as JSON (`index`, `sent`, `msgs_per_s`, `would_block`).
    pub fn to_json(&self) -> Json {
        Json::obj()
            .with("index", self.index)
            .with("sent", self.sent)
            .with("msgs_per_s", round2(self.msgs_per_s))
            .with("would_block", self.would_block)
    }
}

/// One receiver's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverRow {
    /// Member index.
    pub index: u32,
    /// Goodput, messages/s.
    pub msgs_per_s: f64,
    /// Goodput, MB/s.
    pub mb_per_s: f64,
    /// Messages it should have received (others' sent counts).
    pub expected: u64,
    /// Unique messages received.
    pub delivered: u64,
    /// `expected - delivered`.
    pub lost: u64,
    /// Duplicate deliveries.
    pub duplicate: u64,
    /// Out-of-order deliveries.
    pub out_of_order: u64,
    /// One-way latency.
    pub latency: LatencySummary,
    /// Longest time between consecutive deliveries in the measured window, µs.
    pub max_gap_us: f64,
    /// Transport counters.
    pub counters: BTreeMap<String, u64>,
}

/// All receivers together.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Number of receivers.
    pub receivers: usize,
    /// Sum of receivers' msgs/s.
    pub msgs_per_s: f64,
    /// Sum of receivers' MB/s.
    pub mb_per_s: f64,
    /// Mean MB/s per receiver.
    pub mb_per_s_per_receiver: f64,
    /// Sum of expected.
    pub expected: u64,
    /// Sum of delivered.
    pub delivered: u64,
    /// Sum of lost.
    pub lost: u64,
    /// `lost / expected`, percent.
    pub loss_pct: f64,
    /// Sum of duplicates.
    pub duplicate: u64,
    /// Sum of out-of-order deliveries.
    pub out_of_order: u64,
    /// Latency over all receivers' samples.
    pub latency: LatencySummary,
    /// Transport counters summed over all members (`so_*` sizes: maximum).
    pub counters: BTreeMap<String, u64>,
}

/// A finished run: set-up plus every member's result.
#[derive(Debug, Clone)]
pub struct Report {
    /// Set-up.
    pub info: RunInfo,
    /// Member results, any order.
    pub results: Vec<MemberResult>,
}

fn per_s(count: u64, ns: u64) -> f64 {
    if ns == 0 {
        0.0
    } else {
        count as f64 * 1e9 / ns as f64
    }
}

fn counters_json(c: &BTreeMap<String, u64>) -> Json {
    Json::Obj(c.iter().map(|(k, v)| (k.clone(), Json::UInt(*v))).collect())
}

fn round2(v: f64) -> Json {
    Json::Num((v * 100.0).round() / 100.0)
}

impl Report {
    fn sent_by(&self, index: u32) -> u64 {
        self.results
            .iter()
            .find(|r| r.index == index)
            .map_or(0, |r| r.sent)
    }

    /// Per-sender rows.
    pub fn senders(&self) -> Vec<SenderRow> {
        let mut rows: Vec<SenderRow> = self
            .results
            .iter()
            .filter(|r| r.sender)
            .map(|r| SenderRow {
                index: r.index,
                sent: r.sent,
                msgs_per_s: per_s(r.sent_measured, r.measure_ns),
                would_block: r.would_block,
            })
            .collect();
        rows.sort_by_key(|r| r.index);
        rows
    }

    /// Per-receiver rows (members that have at least one other sender).
    pub fn receivers(&self) -> Vec<ReceiverRow> {
        let mut rows = Vec::new();
        for r in &self.results {
            let others: Vec<u32> = (0..self.info.senders).filter(|&s| s != r.index).collect();
            if others.is_empty() {
                continue;
            }
            let expected: u64 = others.iter().map(|&s| self.sent_by(s)).sum();
            let from = |s: u32| r.per_sender.get(s as usize);
            let delivered: u64 = others
                .iter()
                .filter_map(|&s| from(s))
                .map(|x| x.unique)
                .sum();
            rows.push(ReceiverRow {
                index: r.index,
                msgs_per_s: per_s(r.delivered_measured, r.measure_ns),
                mb_per_s: per_s(r.bytes_measured, r.measure_ns) / 1e6,
                expected,
                delivered,
                lost: expected.saturating_sub(delivered),
                duplicate: others
                    .iter()
                    .filter_map(|&s| from(s))
                    .map(|x| x.duplicate)
                    .sum(),
                out_of_order: others
                    .iter()
                    .filter_map(|&s| from(s))
                    .map(|x| x.out_of_order)
                    .sum(),
                latency: LatencySummary::of(&r.latency),
                max_gap_us: r.max_gap_ns as f64 / 1000.0,
                counters: r.counters.clone(),
            });
        }
        rows.sort_by_key(|r| r.index);
        rows
    }

    /// The aggregate over all receivers.
    pub fn aggregate(&self) -> Aggregate {
        let rows = self.receivers();
        let mut hist = crate::report::new_histogram();
        let mut counters: BTreeMap<String, u64> = BTreeMap::new();
        for r in &self.results {
            let others = (0..self.info.senders).any(|s| s != r.index);
            if others {
                hist.add(&r.latency).expect("same histogram bounds");
            }
            for (k, v) in &r.counters {
                let e = counters.entry(k.clone()).or_insert(0);
                if k.starts_with("so_") {
                    *e = (*e).max(*v);
                } else {
                    *e += v;
                }
            }
        }
        let sum = |f: fn(&ReceiverRow) -> u64| rows.iter().map(f).sum::<u64>();
        let expected = sum(|r| r.expected);
        let lost = sum(|r| r.lost);
        let mb: f64 = rows.iter().map(|r| r.mb_per_s).sum();
        Aggregate {
            receivers: rows.len(),
            msgs_per_s: rows.iter().map(|r| r.msgs_per_s).sum(),
            mb_per_s: mb,
            mb_per_s_per_receiver: if rows.is_empty() {
                0.0
            } else {
                mb / rows.len() as f64
            },
            expected,
            delivered: sum(|r| r.delivered),
            lost,
            loss_pct: if expected == 0 {
                0.0
            } else {
                100.0 * lost as f64 / expected as f64
            },
            duplicate: sum(|r| r.duplicate),
            out_of_order: sum(|r| r.out_of_order),
            latency: LatencySummary::of(&hist),
            counters,
        }
    }

    fn ping(&self) -> Option<&crate::member::PingStats> {
        self.results.iter().find_map(|r| r.ping.as_ref())
    }

    /// The whole report as one JSON object.
    pub fn to_json(&self) -> Json {
        let i = &self.info;
        let mut j = Json::obj()
            .with("mode", i.mode.name())
            .with("topology", i.topology.as_str())
            .with("transport", i.transport.as_str())
            .with("group", i.group.as_str())
            .with("members", i.members)
            .with("senders", i.senders)
            .with("size", i.size)
            .with("duration_s", i.duration_s)
            .with("warmup_s", i.warmup_s)
            .with("rate", i.rate)
            .with("offered_rate_per_sender", round2(i.offered_rate))
            .with("pacing", i.pacing.as_str())
            .with("loss_pct", i.loss_pct)
            .with("pingpong", i.pingpong);
        if i.pingpong {
            let p = self.ping();
            j.push(
                "ping",
                Json::obj()
                    .with("sent", p.map_or(0, |p| p.sent))
                    .with("replies", p.map_or(0, |p| p.replies))
                    .with("timeouts", p.map_or(0, |p| p.timeouts))
                    .with(
                        "rtt_us",
                        p.map_or(LatencySummary::default(), |p| LatencySummary::of(&p.rtt))
                            .to_json(),
                    ),
            );
        }
        let senders: Vec<Json> = self.senders().iter().map(SenderRow::to_json).collect();
        j.push("senders_detail", senders);
        if !i.pingpong {
            let receivers: Vec<Json> = self
                .receivers()
                .iter()
                .map(|r| {
                    Json::obj()
                        .with("index", r.index)
                        .with("msgs_per_s", round2(r.msgs_per_s))
                        .with("mb_per_s", round2(r.mb_per_s))
                        .with("expected", r.expected)
                        .with("delivered", r.delivered)
                        .with("lost", r.lost)
                        .with("duplicate", r.duplicate)
                        .with("out_of_order", r.out_of_order)
                        .with("latency_us", r.latency.to_json())
                        .with("max_gap_us", round2(r.max_gap_us))
                        .with("counters", counters_json(&r.counters))
                })
                .collect();
            j.push("receivers", receivers);
        }
        let a = self.aggregate();
        j.push(
            "aggregate",
            Json::obj()
                .with("receivers", a.receivers)
                .with("msgs_per_s", round2(a.msgs_per_s))
                .with("mb_per_s", round2(a.mb_per_s))
                .with("mb_per_s_per_receiver", round2(a.mb_per_s_per_receiver))
                .with("expected", a.expected)
                .with("delivered", a.delivered)
                .with("lost", a.lost)
                .with("loss_pct", round2(a.loss_pct))
                .with("duplicate", a.duplicate)
                .with("out_of_order", a.out_of_order)
                .with("latency_us", a.latency.to_json())
                .with("counters", counters_json(&a.counters)),
        );
        j
    }

    /// One-line description of the set-up.
    pub fn headline(&self) -> String {
        let i = &self.info;
        let offered = if i.offered_rate > 0.0 {
            format!("{:.0} msg/s per sender", i.offered_rate)
        } else {
            "unpaced".to_string()
        };
        format!(
            "{} | {} {} {} | {} members, {} sender{}, {} B | {:.1} s measured (+{:.1} s warm-up) | offered {offered} ({}){}",
            i.mode,
            i.topology,
            i.transport,
            i.group,
            i.members,
            i.senders,
            if i.senders == 1 { "" } else { "s" },
            i.size,
            i.duration_s,
            i.warmup_s,
            i.pacing,
            if i.loss_pct > 0.0 {
                format!(" | loss {}%", i.loss_pct)
            } else {
                String::new()
            }
        )
    }

    /// Human-readable report.
    pub fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "{}", self.headline())?;
        writeln!(
            w,
            "  {:>8} {:>12} {:>12} {:>12}",
            "sender", "sent", "msgs/s", "would-block"
        )?;
        for s in self.senders() {
            writeln!(
                w,
                "  {:>8} {:>12} {:>12.0} {:>12}",
                s.index, s.sent, s.msgs_per_s, s.would_block
            )?;
        }
        if self.info.pingpong {
            if let Some(p) = self.ping() {
                let l = LatencySummary::of(&p.rtt);
                writeln!(
                    w,
                    "  ping-pong: {} pings, {} replies, {} timeouts; RTT µs p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1} (n={})",
                    p.sent, p.replies, p.timeouts, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us, l.count
                )?;
            }
        } else {
            writeln!(
                w,
                "  {:>8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>10} {:>6} {:>6}",
                "receiver",
                "msgs/s",
                "MB/s",
                "p50 µs",
                "p90 µs",
                "p99 µs",
                "p99.9 µs",
                "max µs",
                "delivered",
                "lost",
                "dup",
                "ooo"
            )?;
            let line = |w: &mut dyn Write,
                        name: &str,
                        m: f64,
                        mb: f64,
                        l: &LatencySummary,
                        d: u64,
                        lost: u64,
                        dup: u64,
                        ooo: u64| {
                writeln!(
                    w,
                    "  {:>8} {:>11.0} {:>9.2} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11} {:>10} {:>6} {:>6}",
                    name, m, mb, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, d, lost, dup, ooo
                )
            };
            for r in self.receivers() {
                line(
                    w,
                    &r.index.to_string(),
                    r.msgs_per_s,
                    r.mb_per_s,
                    &r.latency,
                    r.delivered,
                    r.lost,
                    r.duplicate,
                    r.out_of_order,
                )?;
            }
            let a = self.aggregate();
            line(
                w,
                "all",
                a.msgs_per_s,
                a.mb_per_s,
                &a.latency,
                a.delivered,
                a.lost,
                a.duplicate,
                a.out_of_order,
            )?;
            writeln!(
                w,
                "  aggregate: {:.2} MB/s summed over {} receivers ({:.2} MB/s per receiver), loss {:.3}% ({} of {})",
                a.mb_per_s, a.receivers, a.mb_per_s_per_receiver, a.loss_pct, a.lost, a.expected
            )?;
            let stall = self
                .receivers()
                .iter()
                .map(|x| x.max_gap_us)
                .fold(0.0, f64::max);
            writeln!(
                w,
                "  longest delivery stall at any receiver while sending: {:.2} ms",
                stall / 1000.0
            )?;
        }
        let a = self.aggregate();
        let counters: Vec<String> = a.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            w,
            "  transport counters (all members): {}",
            counters.join(" ")
        )?;
        Ok(())
    }
}
