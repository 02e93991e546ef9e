//! Support for the real-process virtual-synchrony lab (`vsync-oracle`, `vsync-member`,
//! `tests/lab_vsync.rs`): argument parsing, the member's JSON-lines log (writer and parser
//! into [`vsync_control::system_sim::MemberLog`], so real runs are judged by the
//! simulator's [`vsync_control::system_sim::check`]), the state digest, and the oracle's
//! status lines.
//!
//! # Member log
//!
//! One JSON object per line, `t` = nanoseconds of `CLOCK_MONOTONIC` (machine-wide, so logs of
//! processes in different network namespaces share one time axis):
//!
//! ```text
//! {"t":..,"ev":"start","process":3,"incarnation":1,"addr":"10.77.1.3:7200"}
//! {"t":..,"ev":"view","view":4,"members":[[1,1],[2,1]],"state":"00ab..."}   state digest (hex u64)
//! {"t":..,"ev":"deliver","view":4,"kind":"ordered","sender":2,"counter":17}
//! {"t":..,"ev":"sent","view":4,"kind":"ordered","counter":18}
//! {"t":..,"ev":"load","view":3,"state":"..."}                              checkpoint loaded
//! {"t":..,"ev":"poisoned","reason":"..."}   {"t":..,"ev":"gone"}   {"t":..,"ev":"done_sending"}
//! {"t":..,"ev":"mcast","view":4,"route":"239.255.0.1:7300"}   group route changed ("unicast")
//! {"t":..,"ev":"stats","views":..,"datagrams_sent":..,"multicast_joins":..,...}   at exit
//! {"t":..,"ev":"exit","reason":"..."}
//! ```
//!
//! Lines are flushed as the member goes, so a SIGKILLed member leaves a readable prefix (a
//! torn last line is ignored by the parser).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use vsync_control::agent::MsgKind;
use vsync_control::system_sim::{MemberLog, MsgId};
use vsync_dataplane::{MemberId, ViewId};

use crate::json::Json;
use crate::payload::now_ns;

/// Parses `1=IP:PORT,2=IP:PORT,...` (replica id = address).
pub fn parse_replicas(s: &str) -> Result<Vec<(u64, SocketAddr)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected ID=IP:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("`{part}`: replica id must be a positive integer"))?;
        if id == 0 {
            return Err(format!("`{part}`: replica ids start at 1"));
        }
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|e| format!("`{part}`: bad address: {e}"))?;
        if out.iter().any(|(i, _)| *i == id) {
            return Err(format!("replica id {id} listed twice"));
        }
        out.push((id, addr));
    }
    if out.is_empty() {
        return Err("no replicas given".into());
    }
    Ok(out)
}

/// The group state the lab's members keep: a hash chain over the OrderedSends delivered
/// (the same step as the whole-system simulator's).
pub fn state_step(state: u64, id: MsgId) -> u64 {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&state.to_le_bytes());
    b[8..12].copy_from_slice(&id.0.to_le_bytes());
    b[12..].copy_from_slice(&id.1.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&b)
}

fn kind_name(k: MsgKind) -> &'static str {
    match k {
        MsgKind::Send => "send",
        MsgKind::Ordered => "ordered",
        MsgKind::P2p => "p2p",
        MsgKind::Raw => "raw",
        MsgKind::RawP2p => "rawp2p",
        MsgKind::Causal => "causal",
    }
}

fn kind_of(s: &str) -> Option<MsgKind> {
    match s {
        "send" => Some(MsgKind::Send),
        "ordered" => Some(MsgKind::Ordered),
        "p2p" => Some(MsgKind::P2p),
        "raw" => Some(MsgKind::Raw),
        "rawp2p" => Some(MsgKind::RawP2p),
        "causal" => Some(MsgKind::Causal),
        _ => None,
    }
}

fn member_json(m: MemberId) -> Json {
    Json::Arr(vec![Json::from(m.process()), Json::from(m.incarnation())])
}

/// Writes a member's log (see the module docs).
#[derive(Debug)]
pub struct MemberLogWriter {
    out: BufWriter<File>,
}

impl MemberLogWriter {
    /// Creates (truncates) the log at `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(MemberLogWriter {
            out: BufWriter::new(File::create(path)?),
        })
    }

    fn line(&mut self, ev: &str, fields: Json) -> io::Result<()> {
        let mut j = Json::obj().with("t", now_ns()).with("ev", ev);
        if let Json::Obj(f) = fields {
            for (k, v) in f {
                j.push(&k, v);
            }
        }
        writeln!(self.out, "{j}")
    }

    /// The first line.
    pub fn start(&mut self, me: MemberId, addr: &str) -> io::Result<()> {
        self.line(
            "start",
            Json::obj()
                .with("process", me.process())
                .with("incarnation", me.incarnation())
                .with("addr", addr),
        )
    }

    /// A view installed, with the state digest at that point.
    pub fn view(&mut self, view: ViewId, members: &[MemberId], state: u64) -> io::Result<()> {
        self.line(
            "view",
            Json::obj()
                .with("view", view.0)
                .with(
                    "members",
                    Json::Arr(members.iter().map(|m| member_json(*m)).collect()),
                )
                .with("state", format!("{state:016x}")),
        )
    }

    /// A delivery.
    pub fn deliver(&mut self, view: ViewId, kind: MsgKind, id: MsgId) -> io::Result<()> {
        self.line(
            "deliver",
            Json::obj()
                .with("view", view.0)
                .with("kind", kind_name(kind))
                .with("sender", id.0)
                .with("counter", id.1),
        )
    }

    /// A message the data plane accepted.
    pub fn sent(&mut self, view: ViewId, kind: MsgKind, counter: u64) -> io::Result<()> {
        self.line(
            "sent",
            Json::obj()
                .with("view", view.0)
                .with("kind", kind_name(kind))
                .with("counter", counter),
        )
    }

    /// A checkpoint loaded (joiner).
    pub fn load(&mut self, view: ViewId, state: u64) -> io::Result<()> {
        self.line(
            "load",
            Json::obj()
                .with("view", view.0)
                .with("state", format!("{state:016x}")),
        )
    }

    /// Any other event (`poisoned`, `gone`, `done_sending`, `exit`, `stats`...) with fields.
    pub fn event(&mut self, ev: &str, fields: Json) -> io::Result<()> {
        self.line(ev, fields)
    }

    /// Pushes buffered lines to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn field_u64(j: &Json, k: &str) -> Result<u64, String> {
    j.get(k)
        .and_then(Json::as_u64)
        .ok_or_else(|| format!("missing integer `{k}`"))
}

fn field_u32(j: &Json, k: &str) -> Result<u32, String> {
    u32::try_from(field_u64(j, k)?).map_err(|_| format!("`{k}` out of range"))
}

fn field_str<'a>(j: &'a Json, k: &str) -> Result<&'a str, String> {
    j.get(k)
        .and_then(Json::as_str)
        .ok_or_else(|| format!("missing string `{k}`"))
}

fn field_hex(j: &Json, k: &str) -> Result<u64, String> {
    u64::from_str_radix(field_str(j, k)?, 16).map_err(|e| format!("`{k}`: {e}"))
}

fn field_kind(j: &Json) -> Result<MsgKind, String> {
    let s = field_str(j, "kind")?;
    kind_of(s).ok_or_else(|| format!("unknown kind `{s}`"))
}

/// What a member log says beyond [`MemberLog`].
#[derive(Clone, Debug, Default)]
pub struct ParsedLog {
    /// The log, in the simulator's form (times = `CLOCK_MONOTONIC`).
    pub log: MemberLog,
    /// The member finished its sends.
    pub done_sending: bool,
    /// The member wrote its exit line.
    pub exited: bool,
    /// Why it was poisoned, as written.
    pub poison_reason: Option<String>,
    /// The group's data-plane routes in order (`mcast` lines): `IP:PORT` of an IP-multicast
    /// address, or `unicast` for unicast fan-out.
    pub routes: Vec<String>,
    /// The numeric fields of the final `stats` line (agent, oracle link, engine counters).
    pub stats: BTreeMap<String, u64>,
}

/// Parses a member log. A malformed line is an error, except a torn last line (a member
/// killed mid-write), which is ignored.
pub fn parse_member_log(text: &str) -> Result<ParsedLog, String> {
    let mut out = ParsedLog::default();
    let lines: Vec<&str> = text.split('\n').collect();
    let complete = if text.ends_with('\n') {
        lines.len() - 1
    } else {
        lines.len().saturating_sub(1)
    };
    for (n, line) in lines.iter().enumerate().take(complete) {
        if line.trim().is_empty() {
            continue;
        }
        let j = Json::parse(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        parse_line(&j, &mut out).map_err(|e| format!("line {}: {e}: {line}", n + 1))?;
    }
    Ok(out)
}

fn parse_line(j: &Json, out: &mut ParsedLog) -> Result<(), String> {
    let t = Duration::from_nanos(field_u64(j, "t")?);
    let log = &mut out.log;
    match field_str(j, "ev")? {
        "start" => {
            log.member = MemberId::new(field_u32(j, "process")?, field_u32(j, "incarnation")?);
        }
        "view" => {
            let view = ViewId(field_u32(j, "view")?);
            let members = j
                .get("members")
                .and_then(Json::as_array)
                .ok_or("missing `members`")?
                .iter()
                .map(|m| {
                    let pair = m.as_array().filter(|a| a.len() == 2).ok_or("bad member")?;
                    let p = pair[0].as_u64().and_then(|v| u32::try_from(v).ok());
                    let i = pair[1].as_u64().and_then(|v| u32::try_from(v).ok());
                    match (p, i) {
                        (Some(p), Some(i)) => Ok(MemberId::new(p, i)),
                        _ => Err("bad member"),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            log.views.push((t, view, members));
            log.states.push((view, field_hex(j, "state")?));
        }
        "deliver" => {
            let id = (field_u32(j, "sender")?, field_u64(j, "counter")?);
            log.delivered
                .push((t, ViewId(field_u32(j, "view")?), field_kind(j)?, id));
        }
        "sent" => {
            let id = (log.member.process(), field_u64(j, "counter")?);
            log.sent
                .push((ViewId(field_u32(j, "view")?), field_kind(j)?, id));
        }
        "poisoned" => {
            log.poisoned.get_or_insert(t);
            out.poison_reason = j.get("reason").and_then(Json::as_str).map(str::to_string);
        }
        "gone" => {
            log.gone.get_or_insert(t);
        }
        "mcast" => out.routes.push(field_str(j, "route")?.to_string()),
        "stats" => {
            if let Json::Obj(fields) = j {
                for (k, v) in fields {
                    if let Some(v) = v.as_u64() {
                        out.stats.insert(k.clone(), v);
                    }
                }
            }
        }
        "done_sending" => out.done_sending = true,
        "exit" => out.exited = true,
        _ => {}
    }
    Ok(())
}

/// Reads and parses a member log file.
pub fn read_member_log(path: &Path) -> Result<ParsedLog, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_member_log(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The fields of one `vsync-oracle` status line that labs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OracleStatusLine {
    /// Replica id.
    pub id: u64,
    /// Whether it leads.
    pub leader: bool,
    /// Raft term.
    pub term: u64,
    /// Applied index.
    pub applied: u64,
}

/// Parses a status line (`vsync-oracle id=1 leader=true ... term=2 ... applied=40 ...`).
pub fn parse_oracle_status(line: &str) -> Option<OracleStatusLine> {
    let rest = line.trim().strip_prefix("vsync-oracle ")?;
    let mut id = None;
    let mut leader = None;
    let mut term = None;
    let mut applied = None;
    for kv in rest.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        match k {
            "id" => id = v.parse().ok(),
            "leader" => leader = v.parse().ok(),
            "term" => term = v.parse().ok(),
            "applied" => applied = v.parse().ok(),
            _ => {}
        }
    }
    Some(OracleStatusLine {
        id: id?,
        leader: leader?,
        term: term?,
        applied: applied?,
    })
}

/// The last status line in an oracle's stderr output.
pub fn last_oracle_status(text: &str) -> Option<OracleStatusLine> {
    text.lines().rev().find_map(parse_oracle_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_parse() {
        let r = parse_replicas("1=10.0.0.1:7100, 2=10.0.0.2:7100").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].0, 2);
        assert!(parse_replicas("").is_err());
        assert!(parse_replicas("0=1.2.3.4:5").is_err());
        assert!(parse_replicas("1=1.2.3.4:5,1=1.2.3.4:6").is_err());
        assert!(parse_replicas("x").is_err());
    }

    #[test]
    fn log_round_trips_and_tolerates_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("vsync-lab-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.jsonl");
        let me = MemberId::new(2, 1);
        let mut w = MemberLogWriter::create(&path).unwrap();
        w.start(me, "127.0.0.1:1").unwrap();
        w.view(ViewId(1), &[MemberId::new(1, 1), me], u64::MAX)
            .unwrap();
        w.deliver(ViewId(1), MsgKind::Ordered, (1, 5)).unwrap();
        w.sent(ViewId(1), MsgKind::Send, 7).unwrap();
        w.event("poisoned", Json::obj().with("reason", "timeout"))
            .unwrap();
        w.flush().unwrap();
        drop(w);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"t\":12,\"ev\":\"deli");
        let p = parse_member_log(&text).unwrap();
        assert_eq!(p.log.member, me);
        assert_eq!(p.log.views[0].2, vec![MemberId::new(1, 1), me]);
        assert_eq!(p.log.states, vec![(ViewId(1), u64::MAX)]);
        assert_eq!(p.log.delivered[0].3, (1, 5));
        assert_eq!(p.log.sent, vec![(ViewId(1), MsgKind::Send, (2, 7))]);
        assert!(p.log.poisoned.is_some());
        assert_eq!(p.poison_reason.as_deref(), Some("timeout"));
        assert!(parse_member_log("{\"t\":1}\n").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn status_line_parses() {
        let s = "x\nvsync-oracle id=2 leader=true leader_hint=2 term=3 commit=9 applied=9 \
                 members=5\nnoise";
        let st = last_oracle_status(s).unwrap();
        assert_eq!((st.id, st.leader, st.term, st.applied), (2, true, 3, 9));
        assert!(parse_oracle_status("vsync-oracle id=2").is_none());
    }
}
