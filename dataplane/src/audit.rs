//! The delivery audit log: an optional per-member JSON-lines record of every message handed to
//! the application, and [`check`], which cross-checks the logs of all members of a run.
//!
//! This module owns the log format, the writer the engine thread uses ([`AuditLog`]), the
//! parser ([`AuditEntry::parse`], [`read_log`]) and the checker ([`check`], [`AuditReport`]).
//!
//! # Enabling it
//!
//! Set `VSYNC_AUDIT_LOG=<path>` (read by [`crate::node::NodeConfig::from_env`]) or
//! [`crate::node::NodeConfig::audit_log`]. The node's engine thread creates (truncates) the
//! file when the node starts and appends one line per delivered message through a 1 MiB
//! `BufWriter`; the buffer is flushed about every 100 ms and at shutdown. A write error stops
//! the log (the node keeps running) and is reported in the node's stats.
//!
//! # Format
//!
//! One JSON object per line, keys always in this order, no spaces:
//!
//! ```text
//! {"member":"3.1","group":42,"view":1,"sender":"2.1","kind":"send","seq":17,"len":1234,"xxh3":"9f3c0a5e1b2d4c6f"}
//! ```
//!
//! | key | meaning |
//! |---|---|
//! | `member` | the member that logged the delivery, `"<process>.<incarnation>"` (decimal) |
//! | `group` | the group id, a decimal `u64` |
//! | `view` | the view id the message was delivered in, a decimal `u32` |
//! | `sender` | the sending member, `"<process>.<incarnation>"` |
//! | `kind` | `send` (reliable multicast), `p2p` (reliable point-to-point), `raw` (unreliable multicast) or `rawp2p` (unreliable point-to-point) |
//! | `seq` | the message's sequence number in the sender's stream (for `send`/`p2p`: its first frame; increasing per stream; a member's own `send` messages are logged by it too — self-delivery) |
//! | `len` | the payload length in bytes |
//! | `xxh3` | XXH3-64 of the payload (seed 0), 16 lower-case hex digits |
//!
//! # What [`check`] verifies
//!
//! Per group and view (sequence numbers restart with every join):
//!
//! * every member's `send` deliveries from each sender have strictly increasing `seq` (no
//!   duplicates, FIFO order);
//! * every member that logged anything in that group and view delivered exactly the same
//!   `send` sequence (`seq`, `len`, `xxh3`) from each sender. The reference is the sender's own
//!   log (self-delivery): no loss means everyone has exactly what the sender delivered to
//!   itself. Without a self-delivery reference (sender's log not given, or self-delivery off)
//!   the longest receiver sequence is the reference and the report says so;
//! * `p2p` deliveries have strictly increasing `seq` per (sender, receiver).
//!
//! Raw deliveries are unreliable and only counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::protocol::{Delivery, DeliveryKind};
use crate::{GroupId, MemberId, ViewId};

/// Size of the log's write buffer.
const BUFFER_BYTES: usize = 1 << 20;

/// One line of an audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// The member that logged the delivery.
    pub member: MemberId,
    /// The group.
    pub group: GroupId,
    /// The view it was delivered in.
    pub view: ViewId,
    /// The sender.
    pub sender: MemberId,
    /// The primitive.
    pub kind: DeliveryKind,
    /// The sequence number in the sender's stream.
    pub seq: u64,
    /// The payload length.
    pub len: usize,
    /// XXH3-64 of the payload.
    pub xxh3: u64,
}

fn kind_name(kind: DeliveryKind) -> &'static str {
    match kind {
        DeliveryKind::Send => "send",
        DeliveryKind::P2p => "p2p",
        DeliveryKind::Raw => "raw",
        DeliveryKind::RawP2p => "rawp2p",
    }
}

fn parse_kind(s: &str) -> Option<DeliveryKind> {
    Some(match s {
        "send" => DeliveryKind::Send,
        "p2p" => DeliveryKind::P2p,
        "raw" => DeliveryKind::Raw,
        "rawp2p" => DeliveryKind::RawP2p,
        _ => return None,
    })
}

/// Formats a member as `process.incarnation`.
struct Member(MemberId);

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0.process(), self.0.incarnation())
    }
}

fn parse_member(s: &str) -> Option<MemberId> {
    let (p, i) = s.split_once('.')?;
    Some(MemberId::new(p.parse().ok()?, i.parse().ok()?))
}

impl AuditEntry {
    /// The entry `member` logs for delivery `d` (hashes the payload).
    pub fn from_delivery(member: MemberId, d: &Delivery<'_>) -> Self {
        AuditEntry {
            member,
            group: d.group,
            view: d.view,
            sender: d.sender,
            kind: d.kind,
            seq: d.seq,
            len: d.payload.len(),
            xxh3: xxhash_rust::xxh3::xxh3_64(d.payload),
        }
    }

    /// Parses one line (without its newline). Keys may come in any order and unknown keys are
    /// ignored; the error says what is wrong.
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut p = JsonCursor {
            s: line.as_bytes(),
            i: 0,
        };
        let (mut member, mut group, mut view, mut sender) = (None, None, None, None);
        let (mut kind, mut seq, mut len, mut xxh3) = (None, None, None, None);
        p.expect(b'{')?;
        if !p.eat(b'}') {
            loop {
                let key = p.string()?;
                p.expect(b':')?;
                let value = p.value()?;
                let bad = |what: &str| format!("bad {key} value {value:?}: expected {what}");
                match key {
                    "member" => member = Some(parse_member(value).ok_or_else(|| bad("\"p.i\""))?),
                    "sender" => sender = Some(parse_member(value).ok_or_else(|| bad("\"p.i\""))?),
                    "group" => group = Some(GroupId(value.parse().map_err(|_| bad("a u64"))?)),
                    "view" => view = Some(ViewId(value.parse().map_err(|_| bad("a u32"))?)),
                    "kind" => {
                        kind = Some(parse_kind(value).ok_or_else(|| bad("send|p2p|raw|rawp2p"))?)
                    }
                    "seq" => seq = Some(value.parse().map_err(|_| bad("a u64"))?),
                    "len" => len = Some(value.parse().map_err(|_| bad("a usize"))?),
                    "xxh3" => {
                        let ok = value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit());
                        let v = u64::from_str_radix(value, 16).ok().filter(|_| ok);
                        xxh3 = Some(v.ok_or_else(|| bad("16 hex digits"))?);
                    }
                    _ => {}
                }
                if p.eat(b'}') {
                    break;
                }
                p.expect(b',')?;
            }
        }
        p.skip_ws();
        if p.i != p.s.len() {
            return Err(format!(
                "trailing characters after the object at column {}",
                p.i + 1
            ));
        }
        let missing = |k: &str| format!("missing key \"{k}\"");
        Ok(AuditEntry {
            member: member.ok_or_else(|| missing("member"))?,
            group: group.ok_or_else(|| missing("group"))?,
            view: view.ok_or_else(|| missing("view"))?,
            sender: sender.ok_or_else(|| missing("sender"))?,
            kind: kind.ok_or_else(|| missing("kind"))?,
            seq: seq.ok_or_else(|| missing("seq"))?,
            len: len.ok_or_else(|| missing("len"))?,
            xxh3: xxh3.ok_or_else(|| missing("xxh3"))?,
        })
    }
}

/// Writes the entry as one JSON line, without the newline.
impl fmt::Display for AuditEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{\"member\":\"{}\",\"group\":{},\"view\":{},\"sender\":\"{}\",\"kind\":\"{}\",\"seq\":{},\"len\":{},\"xxh3\":\"{:016x}\"}}",
            Member(self.member),
            self.group.0,
            self.view.0,
            Member(self.sender),
            kind_name(self.kind),
            self.seq,
            self.len,
            self.xxh3
        )
    }
}

/// A tiny cursor over one flat JSON object whose values are strings without escapes or
/// unsigned integers (all this format needs).
struct JsonCursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> JsonCursor<'a> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at column {}", c as char, self.i + 1))
        }
    }

    fn string(&mut self) -> Result<&'a str, String> {
        self.expect(b'"')?;
        let start = self.i;
        while let Some(&b) = self.s.get(self.i) {
            match b {
                b'"' => {
                    let text = std::str::from_utf8(&self.s[start..self.i])
                        .map_err(|_| "invalid UTF-8".to_string())?;
                    self.i += 1;
                    return Ok(text);
                }
                b'\\' => {
                    return Err(format!(
                        "escape sequences are not used by this format (column {})",
                        self.i + 1
                    ))
                }
                _ => self.i += 1,
            }
        }
        Err("unterminated string".into())
    }

    fn value(&mut self) -> Result<&'a str, String> {
        self.skip_ws();
        if self.s.get(self.i) == Some(&b'"') {
            return self.string();
        }
        let start = self.i;
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!(
                "expected a string or an unsigned integer at column {}",
                start + 1
            ));
        }
        Ok(std::str::from_utf8(&self.s[start..self.i]).expect("ASCII digits"))
    }
}

/// The writer an engine thread uses: one line per delivery into a buffered file. Writing
/// allocates nothing per message. The first I/O error stops the log and is kept for
/// [`AuditLog::error`].
#[derive(Debug)]
pub struct AuditLog {
    out: Option<BufWriter<File>>,
    member: MemberId,
    path: PathBuf,
    lines: u64,
    dirty: bool,
    error: Option<String>,
}

impl AuditLog {
    /// Creates (truncates) `path` for member `member`.
    pub fn create(path: &Path, member: MemberId) -> io::Result<Self> {
        let file = File::create(path)?;
        Ok(AuditLog {
            out: Some(BufWriter::with_capacity(BUFFER_BYTES, file)),
            member,
            path: path.to_path_buf(),
            lines: 0,
            dirty: false,
            error: None,
        })
    }

    /// Logs one delivery.
    pub fn record(&mut self, d: &Delivery<'_>) {
        let Some(out) = self.out.as_mut() else { return };
        let entry = AuditEntry::from_delivery(self.member, d);
        match writeln!(out, "{entry}") {
            Ok(()) => {
                self.lines += 1;
                self.dirty = true;
            }
            Err(e) => self.fail(e),
        }
    }

    /// Flushes buffered lines to the file (a no-op when nothing was written since the last
    /// flush).
    pub fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some(Err(e)) = self.out.as_mut().map(|o| o.flush()) {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: io::Error) {
        self.error = Some(format!("audit log {}: {e}", self.path.display()));
        self.out = None;
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The I/O error that stopped the log, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Reads and parses a whole log; errors name the file and line.
pub fn read_log(path: &Path) -> Result<Vec<AuditEntry>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut entries = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        entries.push(
            AuditEntry::parse(&line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(entries)
}

/// Deliveries one member logged, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberCounts {
    /// `send` deliveries (self-deliveries included).
    pub send: u64,
    /// `p2p` deliveries.
    pub p2p: u64,
    /// `raw` deliveries.
    pub raw: u64,
    /// `rawp2p` deliveries.
    pub raw_p2p: u64,
    /// Payload bytes over all kinds.
    pub bytes: u64,
}

/// What [`check`] found in a consistent set of logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Per member, what it logged.
    pub members: BTreeMap<MemberId, MemberCounts>,
    /// (group, view) pairs seen.
    pub group_views: usize,
    /// (group, view, sender) `send` streams compared across members.
    pub streams_checked: usize,
    /// Remarks that are not failures (e.g. a stream without a self-delivery reference).
    pub notes: Vec<String>,
}

impl AuditReport {
    /// A human-readable multi-line summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "audit OK: {} members, {} group views, {} send streams identical at every member\n",
            self.members.len(),
            self.group_views,
            self.streams_checked
        );
        for (m, c) in &self.members {
            s.push_str(&format!(
                "  {}: send {} p2p {} raw {} rawp2p {} ({} bytes)\n",
                Member(*m),
                c.send,
                c.p2p,
                c.raw,
                c.raw_p2p,
                c.bytes
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        s
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// One logged `send` message: (seq, len, xxh3).
type Logged = (u64, usize, u64);

#[derive(Default)]
struct GroupView {
    /// (member, sender) → that member's `send` deliveries from `sender`, in log order.
    send: BTreeMap<(MemberId, MemberId), Vec<Logged>>,
    /// (sender, receiver) → last p2p seq.
    p2p_last: BTreeMap<(MemberId, MemberId), u64>,
    /// Members that logged anything in this group view.
    members: BTreeSet<MemberId>,
}

fn describe(m: &Logged) -> String {
    format!("seq {} (len {}, xxh3 {:016x})", m.0, m.1, m.2)
}

/// Parses `logs` (one file per member, any order) and verifies them; see the module docs for
/// the rules. The error names the file and line for a malformed or out-of-order line, and the
/// group, view, member, sender and seq for a difference between members.
pub fn check(logs: &[PathBuf]) -> Result<AuditReport, String> {
    let mut report = AuditReport::default();
    let mut views: BTreeMap<(GroupId, ViewId), GroupView> = BTreeMap::new();
    for path in logs {
        for (line, e) in read_log(path)?.into_iter().enumerate() {
            let at = || format!("{}:{}", path.display(), line + 1);
            let c = report.members.entry(e.member).or_default();
            c.bytes += e.len as u64;
            let gv = views.entry((e.group, e.view)).or_default();
            gv.members.insert(e.member);
            match e.kind {
                DeliveryKind::Send => {
                    c.send += 1;
                    let list = gv.send.entry((e.member, e.sender)).or_default();
                    if let Some(last) = list.last() {
                        if e.seq <= last.0 {
                            let what = if e.seq == last.0 {
                                "a duplicate of"
                            } else {
                                "out of order after"
                            };
                            return Err(format!(
                                "{}: group {} view {}: member {} delivered send seq {} from sender {}, {what} seq {}",
                                at(),
                                e.group.0,
                                e.view.0,
                                Member(e.member),
                                e.seq,
                                Member(e.sender),
                                last.0
                            ));
                        }
                    }
                    list.push((e.seq, e.len, e.xxh3));
                }
                DeliveryKind::P2p => {
                    c.p2p += 1;
                    if let Some(last) = gv.p2p_last.insert((e.sender, e.member), e.seq) {
                        if e.seq <= last {
                            let what = if e.seq == last {
                                "a duplicate of"
                            } else {
                                "out of order after"
                            };
                            return Err(format!(
                                "{}: group {} view {}: member {} delivered p2p seq {} from sender {}, {what} seq {last}",
                                at(),
                                e.group.0,
                                e.view.0,
                                Member(e.member),
                                e.seq,
                                Member(e.sender)
                            ));
                        }
                    }
                }
                DeliveryKind::Raw => c.raw += 1,
                DeliveryKind::RawP2p => c.raw_p2p += 1,
            }
        }
    }
    report.group_views = views.len();
    let empty = Vec::new();
    for ((group, view), gv) in &views {
        let senders: BTreeSet<MemberId> = gv.send.keys().map(|(_, s)| *s).collect();
        for sender in senders {
            let own = gv.send.get(&(sender, sender));
            let (reference, source) = match own {
                Some(list) => (list, format!("sender {}'s own log", Member(sender))),
                None => {
                    let longest = gv
                        .send
                        .iter()
                        .filter(|((_, s), _)| *s == sender)
                        .max_by_key(|(_, list)| list.len())
                        .map(|((m, _), list)| (*m, list))
                        .expect("sender has at least one list");
                    report.notes.push(format!(
                        "group {} view {}: no self-delivery from sender {} logged; member {}'s sequence ({} messages) is the reference",
                        group.0,
                        view.0,
                        Member(sender),
                        Member(longest.0),
                        longest.1.len()
                    ));
                    (
                        longest.1,
                        format!("member {}'s log (longest)", Member(longest.0)),
                    )
                }
            };
            for member in &gv.members {
                if *member == sender && own.is_none() {
                    continue;
                }
                let got = gv.send.get(&(*member, sender)).unwrap_or(&empty);
                if got == reference {
                    continue;
                }
                let i = got
                    .iter()
                    .zip(reference.iter())
                    .take_while(|(a, b)| a == b)
                    .count();
                let head = format!(
                    "group {} view {}: member {} delivered {} send messages from sender {}, the reference ({source}) has {}",
                    group.0,
                    view.0,
                    Member(*member),
                    got.len(),
                    Member(sender),
                    reference.len()
                );
                return Err(match (got.get(i), reference.get(i)) {
                    (None, Some(want)) => {
                        format!("{head}: missing {} and {} more", describe(want), reference.len() - i - 1)
                    }
                    (Some(extra), None) => format!("{head}: extra {} not in the reference", describe(extra)),
                    (Some(g), Some(want)) if g.0 == want.0 => format!(
                        "{head}: seq {} differs: expected len {} xxh3 {:016x}, got len {} xxh3 {:016x}",
                        g.0, want.1, want.2, g.1, g.2
                    ),
                    (Some(g), Some(want)) => {
                        format!("{head}: at index {i} expected {}, got {}", describe(want), describe(g))
                    }
                    (None, None) => unreachable!("sequences differ"),
                });
            }
            report.streams_checked += 1;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(member: u32, sender: u32, kind: DeliveryKind, seq: u64, len: usize) -> AuditEntry {
        AuditEntry {
            member: MemberId::new(member, 1),
            group: GroupId(7),
            view: ViewId(1),
            sender: MemberId::new(sender, 1),
            kind,
            seq,
            len,
            xxh3: (seq * 31) ^ len as u64,
        }
    }

    fn write(dir: &Path, name: &str, entries: &[AuditEntry]) -> PathBuf {
        let path = dir.join(name);
        let mut text = String::new();
        for e in entries {
            text.push_str(&format!("{e}\n"));
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vsync-audit-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn line_format_roundtrips() {
        let e = AuditEntry {
            member: MemberId::new(3, 1),
            group: GroupId(42),
            view: ViewId(1),
            sender: MemberId::new(2, 1),
            kind: DeliveryKind::RawP2p,
            seq: 17,
            len: 1234,
            xxh3: 0x9f3c_0a5e_1b2d_4c6f,
        };
        let line = e.to_string();
        assert_eq!(
            line,
            r#"{"member":"3.1","group":42,"view":1,"sender":"2.1","kind":"rawp2p","seq":17,"len":1234,"xxh3":"9f3c0a5e1b2d4c6f"}"#
        );
        assert_eq!(AuditEntry::parse(&line).unwrap(), e);
        let spaced = r#" { "xxh3" : "9f3c0a5e1b2d4c6f", "extra":5, "member":"3.1","group":42,"view":1,"sender":"2.1","kind":"rawp2p","seq":17,"len":1234 } "#;
        assert_eq!(AuditEntry::parse(spaced).unwrap(), e);
        assert!(AuditEntry::parse(&line[..line.len() - 1]).is_err());
        assert!(AuditEntry::parse(&line.replace("rawp2p", "bogus"))
            .unwrap_err()
            .contains("kind"));
        assert!(AuditEntry::parse(&line.replace(",\"seq\":17", ""))
            .unwrap_err()
            .contains("seq"));
        assert!(AuditEntry::parse(&line.replace("\"3.1\"", "\"3\"")).is_err());
    }

    #[test]
    fn check_accepts_identical_and_reports_differences() {
        use DeliveryKind::*;
        let dir = temp_dir("check");
        let a: Vec<_> = (1..=3).map(|s| entry(1, 1, Send, s * 2, 10)).collect();
        let mut b = a.clone();
        for e in &mut b {
            e.member = MemberId::new(2, 1);
        }
        b.push(entry(2, 1, P2p, 1, 5));
        b.push(entry(2, 1, Raw, 1, 5));
        let pa = write(&dir, "a.log", &a);
        let pb = write(&dir, "b.log", &b);
        let report = check(&[pa.clone(), pb.clone()]).unwrap();
        assert_eq!(report.streams_checked, 1);
        assert_eq!(report.members[&MemberId::new(2, 1)].send, 3);
        assert_eq!(report.members[&MemberId::new(2, 1)].p2p, 1);
        assert!(report.summary().contains("audit OK"));

        // Loss at the receiver.
        let pb2 = write(&dir, "b2.log", &b[..2]);
        let e = check(&[pa.clone(), pb2]).unwrap_err();
        assert!(
            e.contains("member 2.1") && e.contains("missing seq 6"),
            "{e}"
        );

        // Content difference.
        let mut b3 = b.clone();
        b3[1].xxh3 ^= 1;
        let e = check(&[pa.clone(), write(&dir, "b3.log", &b3)]).unwrap_err();
        assert!(e.contains("seq 4 differs"), "{e}");

        // Duplicate.
        let mut b4 = b.clone();
        b4.insert(1, b[0]);
        let e = check(&[pa.clone(), write(&dir, "b4.log", &b4)]).unwrap_err();
        assert!(e.contains("b4.log:2") && e.contains("duplicate"), "{e}");

        // P2P out of order.
        let mut b5 = b.clone();
        b5.push(entry(2, 1, P2p, 1, 5));
        let e = check(&[pa.clone(), write(&dir, "b5.log", &b5)]).unwrap_err();
        assert!(e.contains("p2p seq 1"), "{e}");

        // A member that got nothing from the sender.
        let c = vec![entry(3, 3, Send, 1, 1)];
        let e = check(&[pa, pb, write(&dir, "c.log", &c)]).unwrap_err();
        assert!(
            e.contains("member 3.1 delivered 0 send messages from sender 1.1"),
            "{e}"
        );

        // Malformed line names the file and line.
        let bad = dir.join("bad.log");
        std::fs::write(&bad, "{\"member\":\"1.1\"}\n").unwrap();
        let e = check(&[bad]).unwrap_err();
        assert!(e.contains("bad.log:1") && e.contains("missing key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
