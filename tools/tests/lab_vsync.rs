//! Real processes, real network, real faults: virtual synchrony end to end.
//!
//! A 5-host namespace lab with 10 % loss towards every host (BPF filter); three
//! `vsync-oracle` replicas on hosts 0, 1, 2 and one `vsync-member` per host (process number
//! = host index plus one), all streaming OrderedSends (and some Sends). Mid-stream: SIGKILL member 3 (host 2),
//! SIGKILL the oracle leader (whichever replica it is — the other two keep a majority and
//! all three replicas live on hosts 0..=2), then cut hosts 3 and 4 off (`isolate_group`), and
//! heal. The minority members (4, 5) must be excluded and told they were poisoned; the
//! survivors (1, 2) finish their streams. All member logs are then parsed into
//! `vsync_control::system_sim::MemberLog`s and judged by the simulator's own checker
//! (`system_sim::check`): identical views, one total order, same message set per view,
//! nothing lost or duplicated among survivors, joiners' states equal, nothing delivered by
//! a poisoned member after its exclusion.
//!
//! Needs root and iproute2 (CI runs as root); prints "skipped" otherwise. Every process is
//! killed and the lab removed on every path (the process guard is dropped before the lab).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vsync_control::system_sim::{check, SimOutcome};
use vsync_tools::netlab::{Direction, Impairment, Lab, LabConfig};
use vsync_tools::payload::now_ns;
use vsync_tools::vsync_lab::{last_oracle_status, read_member_log, ParsedLog};

const ORACLE: &str = env!("CARGO_BIN_EXE_vsync-oracle");
const MEMBER: &str = env!("CARGO_BIN_EXE_vsync-member");
const SLIDES: &str = env!("CARGO_BIN_EXE_vsync-slides");

const HOSTS: usize = 5;
const ORACLE_PORT: u16 = 7100;
const MEMBER_PORT: u16 = 7200;
/// OrderedSends and Sends per member, and the rate: about 12 s of streaming.
const ORDERED: u64 = 420;
const SENDS: u64 = 60;
const RATE: u32 = 40;

/// The labs are heavy and timing-sensitive: the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn can_run() -> bool {
    vsync_tools::netlab::is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Every process the test started; dropping it SIGKILLs and reaps them all.
#[derive(Default)]
struct Procs {
    children: BTreeMap<String, Child>,
}

impl Procs {
    fn add(&mut self, name: &str, child: Child) {
        self.children.insert(name.to_string(), child);
    }

    fn signal(&mut self, name: &str, sig: i32) {
        if let Some(c) = self.children.get_mut(name) {
            if c.try_wait().ok().flatten().is_none() {
                // SAFETY: plain kill(2) on a child we started and have not reaped.
                unsafe { libc::kill(c.id() as i32, sig) };
            }
        }
    }

    fn running(&mut self, name: &str) -> bool {
        self.children
            .get_mut(name)
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps.
    fn stop(&mut self, name: &str, grace: Duration) {
        self.signal(name, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.running(name) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(name, libc::SIGKILL);
        if let Some(c) = self.children.get_mut(name) {
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn member_log(dir: &Path, p: u32) -> PathBuf {
    dir.join(format!("member-{p}.jsonl"))
}

fn oracle_err(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("oracle-{id}.err"))
}

fn read_log(dir: &Path, p: u32) -> ParsedLog {
    read_member_log(&member_log(dir, p)).unwrap_or_default()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The live replica whose latest status line says it leads (highest term wins).
fn find_leader(dir: &Path, procs: &mut Procs) -> Option<u64> {
    (1..=3u64)
        .filter(|id| procs.running(&format!("oracle{id}")))
        .filter_map(|id| {
            let text = std::fs::read_to_string(oracle_err(dir, id)).ok()?;
            last_oracle_status(&text).filter(|s| s.leader)
        })
        .max_by_key(|s| s.term)
        .map(|s| s.id)
}

/// How a member streams: OrderedSends, Sends, and extra flags.
struct Stream<'a> {
    ordered: u64,
    sends: u64,
    extra: &'a [&'a str],
}

/// The first test's stream, unicast fan-out only.
const UNICAST_STREAM: Stream<'static> = Stream {
    ordered: ORDERED,
    sends: SENDS,
    extra: &["--mcast-port", "0"],
};

fn spawn_member(
    lab: &Lab,
    dir: &Path,
    host: usize,
    oracles: &str,
    create: bool,
    stream: &Stream,
) -> Child {
    let p = host as u32 + 1;
    let err = File::create(dir.join(format!("member-{p}.err"))).expect("stderr file");
    lab.command(host, MEMBER)
        .args([
            "--process",
            &p.to_string(),
            "--listen",
            &format!("{}:{MEMBER_PORT}", lab.host_addr(host)),
            "--oracle",
            oracles,
            "--group",
            "lab",
            if create { "--create" } else { "--join" },
            "--ordered",
            &stream.ordered.to_string(),
            "--sends",
            &stream.sends.to_string(),
            "--rate",
            &RATE.to_string(),
            "--size",
            "100",
            "--heartbeat-ms",
            "50",
            "--lease-ms",
            "250",
            "--exit-after-ms",
            "110000",
            "--log",
        ])
        .arg(member_log(dir, p))
        .args(stream.extra)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn vsync-member")
}

/// Three `vsync-oracle` replicas on hosts 0, 1, 2 with `extra` flags; returns `--oracle`.
fn spawn_oracles(lab: &Lab, dir: &Path, procs: &mut Procs, extra: &[&str]) -> String {
    let oracles = (0..3)
        .map(|i| format!("{}={}:{ORACLE_PORT}", i + 1, lab.host_addr(i)))
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..3usize {
        let id = i as u64 + 1;
        let err = File::create(oracle_err(dir, id)).expect("oracle stderr");
        let child = lab
            .command(i, ORACLE)
            .args([
                "--id",
                &id.to_string(),
                "--listen",
                &format!("{}:{ORACLE_PORT}", lab.host_addr(i)),
                "--peers",
                &oracles,
                "--fd-interval-ms",
                "50",
                "--fd-timeout-ms",
                "500",
                "--tick-ms",
                "20",
                "--status-ms",
                "100",
                // Safety net should this test process itself be killed.
                "--exit-after-ms",
                "120000",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn vsync-oracle");
        procs.add(&format!("oracle{id}"), child);
    }
    oracles
}

fn views_summary(l: &ParsedLog) -> String {
    l.log
        .views
        .iter()
        .map(|(_, v, m)| {
            format!(
                "{}:{:?}",
                v.0,
                m.iter().map(|m| m.process()).collect::<Vec<_>>()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn virtual_synchrony_over_lossy_lab_with_crashes_and_partition() {
    if !can_run() {
        println!("virtual synchrony over a lossy lab: skipped: needs root and iproute2");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let prefix = format!("lvs{}", std::process::id() % 10_000);
    let dir = std::env::temp_dir().join(format!("vsync-lab-{prefix}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log dir");

    // Declared before the processes, so it is dropped (namespaces deleted) after they are
    // killed, on every path.
    let mut lab = Lab::create(LabConfig::new(prefix.clone(), HOSTS)).expect("create lab");
    let mut procs = Procs::default();
    for i in 0..HOSTS {
        lab.set_impairment(
            i,
            Direction::ToHost,
            Impairment {
                loss_pct: 10.0,
                delay_ms: 0.0,
            },
        )
        .expect("10 % loss");
    }

    // Oracle replicas on hosts 0, 1, 2 (no IP-multicast mapping in this test).
    let oracles = spawn_oracles(&lab, &dir, &mut procs, &["--unicast-only"]);
    wait_until("an oracle leader", Duration::from_secs(15), || {
        find_leader(&dir, &mut procs).is_some()
    });

    // Members: 1 creates, then the others join.
    procs.add(
        "member1",
        spawn_member(&lab, &dir, 0, &oracles, true, &UNICAST_STREAM),
    );
    wait_until("member 1's first view", Duration::from_secs(15), || {
        !read_log(&dir, 1).log.views.is_empty()
    });
    for h in 1..HOSTS {
        procs.add(
            &format!("member{}", h + 1),
            spawn_member(&lab, &dir, h, &oracles, false, &UNICAST_STREAM),
        );
    }
    wait_until("a view of all 5 members", Duration::from_secs(20), || {
        (1..=5).all(|p| {
            read_log(&dir, p)
                .log
                .views
                .last()
                .is_some_and(|v| v.2.len() == HOSTS)
        })
    });
    let t0 = Instant::now();
    println!("all 5 members in one view after {:?}", started.elapsed());
    let at = |s: f64| {
        let when = t0 + Duration::from_secs_f64(s);
        if let Some(d) = when.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    };

    // Fault 1: SIGKILL member 3 (host 2).
    at(2.0);
    let member3_killed = now_ns();
    procs.signal("member3", libc::SIGKILL);
    println!("t+2.0 s: SIGKILL member 3");

    // Fault 2: SIGKILL the oracle leader.
    at(3.5);
    let mut leader = None;
    wait_until("a leader to kill", Duration::from_secs(10), || {
        leader = find_leader(&dir, &mut procs);
        leader.is_some()
    });
    let leader = leader.expect("checked");
    procs.signal(&format!("oracle{leader}"), libc::SIGKILL);
    println!("t+3.5 s: SIGKILL oracle leader {leader}");

    // Fault 3: partition hosts 3 and 4 (members 4, 5; no oracle replica) away.
    at(5.5);
    lab.isolate_group(&[3, 4]).expect("isolate hosts 3, 4");
    println!("t+5.5 s: hosts 3, 4 cut off");
    at(8.5);
    lab.heal_all().expect("heal");
    println!("t+8.5 s: healed");
    let new_leader = find_leader(&dir, &mut procs);
    println!("oracle leader now {new_leader:?}");

    // The minority learns it was excluded.
    wait_until(
        "members 4 and 5 to report being poisoned",
        Duration::from_secs(20),
        || (4..=5).all(|p| read_log(&dir, p).log.poisoned.is_some()),
    );
    // Survivors finish and deliver everything the survivors sent.
    let survivors = [1u32, 2];
    wait_until(
        "the survivors to finish and deliver every survivor's messages",
        Duration::from_secs(40),
        || {
            let logs: Vec<ParsedLog> = survivors.iter().map(|p| read_log(&dir, *p)).collect();
            if !logs.iter().all(|l| l.done_sending) {
                return false;
            }
            // Every survivor's message sent in a view a survivor installed is delivered
            // there (earlier ones reach a joiner through its checkpoint instead).
            logs.iter().all(|l| {
                let views: BTreeSet<u32> = l.log.views.iter().map(|v| v.1 .0).collect();
                let got: BTreeSet<(u32, u64)> = l.log.delivered.iter().map(|d| d.3).collect();
                logs.iter()
                    .flat_map(|o| o.log.sent.iter())
                    .filter(|s| views.contains(&s.0 .0))
                    .all(|s| got.contains(&s.2))
            })
        },
    );
    for p in survivors {
        procs.stop(&format!("member{p}"), Duration::from_secs(5));
    }
    for p in 3..=5 {
        procs.stop(&format!("member{p}"), Duration::from_secs(2));
    }
    for id in 1..=3 {
        procs.stop(&format!("oracle{id}"), Duration::from_secs(3));
    }

    // Judge the logs with the simulator's checker.
    let mut out = SimOutcome::default();
    for p in 1..=5u32 {
        let mut parsed = read_member_log(&member_log(&dir, p)).expect("readable member log");
        if p == 3 {
            parsed.log.crashed = Some(Duration::from_nanos(member3_killed));
        }
        println!(
            "member {p}: views [{}] delivered {} sent {} poisoned {:?} ({:?}) done {} exited {}",
            views_summary(&parsed),
            parsed.log.delivered.len(),
            parsed.log.sent.len(),
            parsed.log.poisoned.is_some(),
            parsed.poison_reason,
            parsed.done_sending,
            parsed.exited,
        );
        out.delivered += parsed.log.delivered.len() as u64;
        out.views_installed += parsed.log.views.len() as u64;
        out.logs.insert(p, parsed.log);
    }
    if let Err(e) = check(&out) {
        panic!(
            "virtual-synchrony check failed: {e}\n(logs kept in {})",
            dir.display()
        );
    }
    for p in [4u32, 5] {
        let l = &out.logs[&p];
        assert!(
            l.poisoned.is_some(),
            "member {p} was not told it was poisoned"
        );
    }
    for p in survivors {
        let l = &out.logs[&p];
        let last = l.views.last().expect("survivor has views");
        let members: Vec<u32> = last.2.iter().map(|m| m.process()).collect();
        assert_eq!(
            members,
            vec![1, 2],
            "survivor {p}'s final view should hold exactly the survivors"
        );
        assert!(l.poisoned.is_none(), "survivor {p} was poisoned");
        assert_eq!(
            l.sent.len() as u64,
            ORDERED + SENDS,
            "survivor {p} sent all"
        );
    }

    drop(procs);
    lab.destroy().expect("lab teardown");
    let ns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains(&prefix),
        "namespaces of {prefix} left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "virtual synchrony over a lossy lab: ok in {:?} ({} deliveries, {} views installed)",
        started.elapsed(),
        out.delivered,
        out.views_installed
    );
}

/// `IpExt` `OutMcastPkts` and `InMcastPkts` of host `i`'s namespace (`/proc/net/netstat`).
fn mcast_packets(lab: &Lab, i: usize) -> (u64, u64) {
    let out = lab
        .command(i, "cat")
        .arg("/proc/net/netstat")
        .output()
        .expect("read /proc/net/netstat in the host namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("IpExt:")).collect();
    assert!(lines.len() >= 2, "no IpExt counters in {text}");
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let values: Vec<&str> = lines[1].split_whitespace().collect();
    let get = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|k| values.get(k))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("IpExt {name} missing"))
    };
    (get("OutMcastPkts"), get("InMcastPkts"))
}

/// Dr. Multicast end to end: the same 5-host lab (10 % loss towards every host, three
/// replicas, one member per host) with the oracle's IP-multicast mapping on (range
/// 239.255.77.1–239.255.77.2, remap every second). The group starts with its creator alone
/// (unicast), is mapped to a multicast address once others join (a route change mid-stream),
/// then member 3 is SIGKILLed (a membership change, so a remap). The logs must pass
/// `system_sim::check`, every member must have routed the group to a 239.255.77.x address and
/// joined it, and each survivor's namespace must have sent and received IP-multicast packets
/// by the hundred (kernel `IpExt` counters), i.e. group traffic really went over multicast.
#[test]
fn virtual_synchrony_over_ip_multicast() {
    if !can_run() {
        println!("virtual synchrony over IP multicast: skipped: needs root and iproute2");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let prefix = format!("lvm{}", std::process::id() % 10_000);
    let dir = std::env::temp_dir().join(format!("vsync-lab-{prefix}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log dir");

    let mut lab = Lab::create(LabConfig::new(prefix.clone(), HOSTS)).expect("create lab");
    let mut procs = Procs::default();
    for i in 0..HOSTS {
        lab.set_impairment(
            i,
            Direction::ToHost,
            Impairment {
                loss_pct: 10.0,
                delay_ms: 0.0,
            },
        )
        .expect("10 % loss");
    }
    let baseline: Vec<(u64, u64)> = (0..HOSTS).map(|i| mcast_packets(&lab, i)).collect();
    let oracles = spawn_oracles(
        &lab,
        &dir,
        &mut procs,
        &[
            "--mc-range",
            "239.255.77.1-239.255.77.2",
            "--remap-interval-s",
            "1",
        ],
    );
    wait_until("an oracle leader", Duration::from_secs(15), || {
        find_leader(&dir, &mut procs).is_some()
    });
    let stream = Stream {
        ordered: 200,
        sends: 40,
        extra: &["--mcast-port", "7300"],
    };
    procs.add(
        "member1",
        spawn_member(&lab, &dir, 0, &oracles, true, &stream),
    );
    wait_until("member 1's first view", Duration::from_secs(15), || {
        !read_log(&dir, 1).log.views.is_empty()
    });
    for h in 1..HOSTS {
        procs.add(
            &format!("member{}", h + 1),
            spawn_member(&lab, &dir, h, &oracles, false, &stream),
        );
    }
    wait_until("a view of all 5 members", Duration::from_secs(20), || {
        (1..=5).all(|p| {
            read_log(&dir, p)
                .log
                .views
                .last()
                .is_some_and(|v| v.2.len() == HOSTS)
        })
    });
    let t0 = Instant::now();
    println!("all 5 members in one view after {:?}", started.elapsed());
    let when = t0 + Duration::from_secs(2);
    if let Some(d) = when.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
    let member3_killed = now_ns();
    procs.signal("member3", libc::SIGKILL);
    println!("t+2.0 s: SIGKILL member 3");

    let survivors = [1u32, 2, 4, 5];
    wait_until(
        "the survivors to finish and deliver every survivor's messages",
        Duration::from_secs(40),
        || {
            let logs: Vec<ParsedLog> = survivors.iter().map(|p| read_log(&dir, *p)).collect();
            if !logs.iter().all(|l| l.done_sending) {
                return false;
            }
            logs.iter().all(|l| {
                let views: BTreeSet<u32> = l.log.views.iter().map(|v| v.1 .0).collect();
                let got: BTreeSet<(u32, u64)> = l.log.delivered.iter().map(|d| d.3).collect();
                logs.iter()
                    .flat_map(|o| o.log.sent.iter())
                    .filter(|s| views.contains(&s.0 .0))
                    .all(|s| got.contains(&s.2))
            })
        },
    );
    for p in survivors {
        procs.stop(&format!("member{p}"), Duration::from_secs(5));
    }
    procs.stop("member3", Duration::from_secs(1));
    for id in 1..=3 {
        procs.stop(&format!("oracle{id}"), Duration::from_secs(3));
    }
    let packets: Vec<(u64, u64)> = (0..HOSTS)
        .map(|i| {
            let (o, n) = mcast_packets(&lab, i);
            (o - baseline[i].0, n - baseline[i].1)
        })
        .collect();

    let mut out = SimOutcome::default();
    let mut parsed_logs = BTreeMap::new();
    for p in 1..=5u32 {
        let mut parsed = read_member_log(&member_log(&dir, p)).expect("readable member log");
        if p == 3 {
            parsed.log.crashed = Some(Duration::from_nanos(member3_killed));
        }
        println!(
            "member {p}: views [{}] delivered {} sent {} routes {:?} stats {:?} \
             IP-multicast packets out/in {:?}",
            views_summary(&parsed),
            parsed.log.delivered.len(),
            parsed.log.sent.len(),
            parsed.routes,
            parsed.stats,
            packets[p as usize - 1],
        );
        out.delivered += parsed.log.delivered.len() as u64;
        out.views_installed += parsed.log.views.len() as u64;
        out.logs.insert(p, parsed.log.clone());
        parsed_logs.insert(p, parsed);
    }
    if let Err(e) = check(&out) {
        panic!(
            "virtual-synchrony check failed: {e}\n(logs kept in {})",
            dir.display()
        );
    }
    for p in survivors {
        let l = &parsed_logs[&p];
        assert!(
            l.routes
                .iter()
                .any(|r| r.starts_with("239.255.77.") && r.ends_with(":7300")),
            "member {p} never routed the group over IP multicast: {:?}",
            l.routes
        );
        assert!(
            l.stats.get("multicast_joins").is_some_and(|j| *j >= 1),
            "member {p} joined no multicast address: {:?}",
            l.stats
        );
        assert!(l.log.poisoned.is_none(), "survivor {p} was poisoned");
        assert_eq!(
            l.log.sent.len() as u64,
            stream.ordered + stream.sends,
            "survivor {p} sent all"
        );
        let last = l.log.views.last().expect("survivor has views");
        let members: BTreeSet<u32> = last.2.iter().map(|m| m.process()).collect();
        assert_eq!(
            members,
            survivors.into_iter().collect(),
            "survivor {p}'s final view"
        );
        let (sent_mc, got_mc) = packets[p as usize - 1];
        assert!(
            sent_mc >= 100 && got_mc >= 100,
            "member {p}'s host sent {sent_mc} and received {got_mc} IP-multicast packets: \
             group traffic did not go over IP multicast"
        );
    }

    drop(procs);
    lab.destroy().expect("lab teardown");
    let ns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains(&prefix),
        "namespaces of {prefix} left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "virtual synchrony over IP multicast: ok in {:?} ({} deliveries, {} views installed)",
        started.elapsed(),
        out.delivered,
        out.views_installed
    );
}

/// The public `vsync` library across real hosts: the slides' program (`vsync-slides`, i.e.
/// `examples/slides.rs` on `System` / `Group`) as three processes on three namespace hosts,
/// each binding its own address (`VSYNC_BIND_IP`) and finding the three `vsync-oracle`
/// replicas through `VSYNC_HOSTS`, with 5 % loss towards every host. Every member must print
/// the same 15-tuple database in the same order, and the rank-1 member answers 0..4 for each
/// of its three queries.
#[test]
fn slides_program_across_hosts() {
    if !can_run() {
        println!("slides program across hosts: skipped: needs root and iproute2");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("lsl{}", std::process::id() % 10_000);
    let dir = std::env::temp_dir().join(format!("vsync-lab-{prefix}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log dir");
    let mut lab = Lab::create(LabConfig::new(prefix.clone(), 3)).expect("create lab");
    let mut procs = Procs::default();
    spawn_oracles(&lab, &dir, &mut procs, &[]);
    for i in 0..3 {
        lab.set_impairment(
            i,
            Direction::ToHost,
            Impairment {
                loss_pct: 5.0,
                delay_ms: 0.0,
            },
        )
        .expect("5 % loss");
    }
    let hosts = (0..3)
        .map(|i| lab.host_addr(i).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out_path = |i: usize| dir.join(format!("slides-{i}.out"));
    for i in 0..3usize {
        let out = File::create(out_path(i)).expect("slides stdout");
        let err = File::create(dir.join(format!("slides-{i}.err"))).expect("slides stderr");
        let child = lab
            .command(i, SLIDES)
            .arg(i.to_string())
            .env("VSYNC_HOSTS", &hosts)
            .env("VSYNC_ORACLE_PORT", ORACLE_PORT.to_string())
            .env("VSYNC_BIND_IP", lab.host_addr(i).to_string())
            .env("VSYNC_FD_INTERVAL_MS", "50")
            .env("VSYNC_FD_TIMEOUT_MS", "500")
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn vsync-slides");
        procs.add(&format!("slides{i}"), child);
    }
    wait_until(
        "the three members to finish",
        Duration::from_secs(90),
        || (0..3).all(|i| !procs.running(&format!("slides{i}"))),
    );
    let outs: Vec<String> = (0..3)
        .map(|i| std::fs::read_to_string(out_path(i)).unwrap_or_default())
        .collect();
    let dbs: Vec<&str> = outs
        .iter()
        .map(|o| {
            o.lines()
                .find(|l| l.starts_with("Database: "))
                .unwrap_or_else(|| panic!("a member printed no database:\n{o}"))
        })
        .collect();
    assert!(
        dbs.iter().all(|d| *d == dbs[0]),
        "databases differ: {dbs:#?}"
    );
    assert_eq!(dbs[0].matches('(').count(), 15, "{}", dbs[0]);
    let answers: Vec<&str> = outs
        .iter()
        .flat_map(|o| {
            o.lines()
                .skip_while(|l| !l.starts_with("Answers for Query"))
                .filter(|l| l.starts_with(char::is_numeric))
        })
        .collect();
    assert_eq!(answers.len(), 3, "three queries answered: {outs:#?}");
    for a in answers {
        let mut v: Vec<i32> = a.split_whitespace().map(|x| x.parse().unwrap()).collect();
        v.sort_unstable();
        assert_eq!(v, vec![0, 1, 2, 3, 4]);
    }
    drop(procs);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
