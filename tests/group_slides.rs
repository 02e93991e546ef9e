//! The slides' program (examples/slides.rs) as three separate processes. The test binary
//! re-executes itself (`current_exe`) with `VSYNC_SLIDES_CHILD` set to run one member; the
//! first child to bind the test's private oracle port hosts the embedded oracle.

#[path = "../examples/slides.rs"]
#[allow(dead_code)]
mod slides;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "VSYNC_SLIDES_CHILD";

/// Runs one member when re-executed by `slides_three_processes`; a no-op otherwise.
#[test]
fn slides_child() {
    if let Ok(label) = std::env::var(CHILD) {
        slides::run(&label).expect("slides member");
    }
}

fn wait_child(mut c: Child, limit: Duration) -> (bool, String) {
    let t = Instant::now();
    loop {
        match c.try_wait().unwrap() {
            Some(st) => {
                let mut out = String::new();
                c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                return (st.success(), out);
            }
            None if t.elapsed() > limit => {
                let _ = c.kill();
                let _ = c.wait();
                let mut out = String::new();
                c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                return (false, out);
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn parse_tuple(s: &str) -> (i32, i32) {
    let (a, b) = s.trim().split_once('/').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn slides_three_processes() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<Child> = (0..3)
        .map(|i| {
            Command::new(&exe)
                .args(["--exact", "slides_child", "--nocapture", "--test-threads=1"])
                .env(CHILD, i.to_string())
                .env("VSYNC_ORACLE_PORT", port.to_string())
                .env_remove("VSYNC_HOSTS")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<(bool, String)> = children
        .into_iter()
        .map(|c| wait_child(c, Duration::from_secs(120)))
        .collect();
    for (i, (ok, out)) in outs.iter().enumerate() {
        assert!(*ok, "child {i} failed; its output:\n{out}");
    }
    let outs: Vec<&str> = outs.iter().map(|(_, o)| o.as_str()).collect();
    assert_eq!(
        outs.iter()
            .filter(|o| o.contains("this process hosts the ORACLE"))
            .count(),
        1,
        "exactly one process hosts the oracle"
    );

    // Every database: the same 15 tuples in the same order, each (rank, n) exactly once.
    let dbs: Vec<&str> = outs
        .iter()
        .map(|o| {
            o.lines()
                .find_map(|l| l.strip_prefix("Database: "))
                .expect("database line")
        })
        .collect();
    assert_eq!(dbs[0], dbs[1]);
    assert_eq!(dbs[0], dbs[2]);
    let all: BTreeSet<(i32, i32)> = (0..3).flat_map(|r| (0..5).map(move |n| (r, n))).collect();
    let db: Vec<(i32, i32)> = dbs[0]
        .trim_matches(|c| c == '[' || c == ']')
        .split("), (")
        .map(|t| {
            let t = t.trim_matches(|c| c == '(' || c == ')');
            let (a, b) = t.split_once(", ").unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(db.len(), 15);
    assert_eq!(db.iter().copied().collect::<BTreeSet<_>>(), all);
    // Each sender's tuples in its sending order (OrderedSend keeps sender FIFO).
    for r in 0..3 {
        let ns: Vec<i32> = db.iter().filter(|t| t.0 == r).map(|t| t.1).collect();
        assert_eq!(ns, [0, 1, 2, 3, 4]);
    }
    // Every member printed the three views' "New View" and 15 "New tuple" lines.
    for o in &outs {
        assert_eq!(
            o.lines().filter(|l| l.starts_with("New tuple: ")).count(),
            15
        );
        assert!(o
            .lines()
            .any(|l| l.starts_with("New View: View[gname=<foo>")));
    }

    // Each query: every tuple scanned exactly once across the three members.
    let mut scanned: BTreeMap<i32, Vec<(i32, i32)>> = BTreeMap::new();
    let mut included: BTreeMap<i32, Vec<(i32, i32)>> = BTreeMap::new();
    for o in &outs {
        let mut arg = None;
        for l in o.lines() {
            if let Some(a) = l.strip_prefix("=== Query for arg=") {
                arg = Some(a.trim().parse::<i32>().unwrap());
            } else if let (Some(a), Some(t)) = (arg, l.strip_prefix("Looking at ")) {
                scanned.entry(a).or_default().push(parse_tuple(t));
            } else if let (Some(a), Some(t)) = (arg, l.strip_prefix("Including ")) {
                included.entry(a).or_default().push(parse_tuple(t));
            }
        }
    }
    assert_eq!(scanned.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    for (arg, list) in &scanned {
        let mut sorted = list.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            all.iter().copied().collect::<Vec<_>>(),
            "query {arg}"
        );
        let mut inc = included[arg].clone();
        inc.sort();
        assert_eq!(inc, (0..5).map(|n| (*arg, n)).collect::<Vec<_>>());
    }

    // The querier (rank 1) printed 0..4 for each rank.
    let querier: Vec<&&str> = outs
        .iter()
        .filter(|o| o.contains("Answers for Query rank="))
        .collect();
    assert_eq!(querier.len(), 1, "exactly one member queries");
    let lines: Vec<&str> = querier[0].lines().collect();
    for n in 0..3 {
        let i = lines
            .iter()
            .position(|l| l.trim() == format!("Answers for Query rank={n}"))
            .expect("answers header");
        let mut vals: Vec<i32> = lines[i + 1]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        vals.sort();
        assert_eq!(vals, [0, 1, 2, 3, 4], "answers for rank {n}");
    }
}
