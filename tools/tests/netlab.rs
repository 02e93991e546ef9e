//! Integration tests of the namespace network lab. They need root and iproute2; without
//! them each test prints "skipped: needs root" (or names the missing tool) and passes.
//! Every lab is owned by a `Lab` value, so its `Drop` removes the namespaces even when an
//! assertion fails.

use std::io::{BufRead, BufReader};
use std::net::SocketAddrV4;
use std::process::{Command, Stdio};
use std::time::Duration;

use vsync_tools::netlab::{self, Direction, Impairment, Lab, LabConfig};

const NETLAB: &str = env!("CARGO_BIN_EXE_vsync-netlab");

fn can_run(test: &str) -> bool {
    if !netlab::is_root() {
        println!("{test}: skipped: needs root");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        println!("{test}: skipped: needs iproute2 (`ip`)");
        return false;
    }
    true
}

fn prefix(tag: &str) -> String {
    format!("nlt{}{tag}", std::process::id() % 100_000)
}

fn reachable(lab: &Lab, from: usize, to: usize) -> bool {
    lab.ping(from, to, Duration::from_millis(400))
        .expect("ping machinery")
        .is_some()
}

/// Starts `vsync-netlab mcast-recv` in host `i` and waits until it has joined the group.
fn start_receiver(
    lab: &Lab,
    i: usize,
    group: SocketAddrV4,
    tag: &str,
    extra: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = lab
        .command(i, NETLAB)
        .args(["mcast-recv", "--group", &group.to_string(), "--iface"])
        .arg(lab.host_addr(i).to_string())
        .args(["--tag", tag])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn receiver");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).expect("read joined line");
    assert!(line.starts_with("joined"), "receiver said {line:?}");
    (child, out)
}

fn finish_receiver(
    (mut child, mut out): (std::process::Child, BufReader<std::process::ChildStdout>),
) -> (bool, usize) {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let ok = child.wait().unwrap().success();
    let n = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected receiver output {line:?}"));
    (ok, n)
}

fn send(lab: &Lab, from: usize, group: SocketAddrV4, tag: &str, count: u32, interval_ms: u32) {
    let st = lab
        .command(from, NETLAB)
        .args(["mcast-send", "--group", &group.to_string(), "--iface"])
        .arg(lab.host_addr(from).to_string())
        .args(["--tag", tag, "--count", &count.to_string()])
        .args(["--interval-ms", &interval_ms.to_string()])
        .status()
        .expect("spawn sender");
    assert!(st.success());
}

#[test]
fn three_hosts_ping_multicast_loss_partitions() {
    if !can_run("three_hosts_ping_multicast_loss_partitions") {
        return;
    }
    let p = prefix("a");
    let mut lab = Lab::create(LabConfig::new(p.clone(), 3)).expect("create lab");
    assert_eq!(lab.host_count(), 3);
    assert_eq!(lab.host_name(0), format!("{p}-h1"));
    assert_eq!(lab.host_addr(1).octets()[3], 2);

    // command(): the address really is inside the namespace.
    let out = lab
        .command(1, "ip")
        .args(["-4", "-o", "addr"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{}/24", lab.host_addr(1))), "{text}");
    assert!(text.contains(&lab.interface(1)), "{text}");

    // host1 → host2: iputils ping when installed, the built-in ICMP probe always.
    if Command::new("ping").arg("-V").output().is_ok() {
        let st = lab
            .command(0, "ping")
            .args(["-c1", "-W1", &lab.host_addr(1).to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "ping -c1 -W1 host2 from host1 failed");
    } else {
        println!("note: iputils ping not installed; using the built-in ICMP probe only");
    }
    assert!(reachable(&lab, 0, 1));
    assert!(reachable(&lab, 0, 2));

    // One multicast datagram burst from host1 reaches host2 and host3 (separate processes).
    let group = SocketAddrV4::new(lab.group_addr(1), 7700);
    let r2 = start_receiver(&lab, 1, group, "t1", &["--count", "1"]);
    let r3 = start_receiver(&lab, 2, group, "t1", &["--count", "1"]);
    send(&lab, 0, group, "t1", 3, 10);
    assert_eq!(finish_receiver(r2), (true, 1));
    assert_eq!(finish_receiver(r3), (true, 1));

    // 100 % loss towards host2 blocks it; clearing restores it.
    lab.set_netem(1, 100.0, 0.0).unwrap();
    assert!(!reachable(&lab, 0, 1), "100% loss should block ping");
    assert!(reachable(&lab, 0, 2));
    lab.set_netem(1, 0.0, 0.0).unwrap();
    assert!(reachable(&lab, 0, 1));

    // 50 % loss towards host3 only: host2 gets everything, host3 about half.
    lab.set_netem(2, 50.0, 0.0).unwrap();
    let args = ["--all", "--count", "0", "--timeout-ms", "2500"];
    let r2 = start_receiver(&lab, 1, group, "t2", &args);
    let r3 = start_receiver(&lab, 2, group, "t2", &args);
    send(&lab, 0, group, "t2", 400, 1);
    let (_, n2) = finish_receiver(r2);
    let (_, n3) = finish_receiver(r3);
    assert_eq!(n2, 400, "host2 has no loss");
    assert!((120..=280).contains(&n3), "host3 at 50% loss got {n3}/400");
    lab.set_netem(2, 0.0, 0.0).unwrap();

    // Loss on the sender side (FromHost) is correlated: it hits every receiver.
    lab.set_impairment(
        0,
        Direction::FromHost,
        Impairment {
            loss_pct: 100.0,
            delay_ms: 0.0,
        },
    )
    .unwrap();
    assert!(!reachable(&lab, 0, 1));
    assert!(!reachable(&lab, 0, 2));
    assert!(reachable(&lab, 1, 2));
    lab.set_impairment(0, Direction::FromHost, Impairment::default())
        .unwrap();

    // isolate / heal one host.
    lab.isolate(1).unwrap();
    assert_eq!(lab.segment_of(1), None);
    assert!(!reachable(&lab, 0, 1));
    assert!(reachable(&lab, 0, 2));
    lab.heal(1).unwrap();
    assert!(reachable(&lab, 0, 1));

    // Partition {host2, host3} | {host1}.
    let seg = lab.isolate_group(&[1, 2]).unwrap();
    assert_eq!(lab.segment_of(2), Some(seg.as_str()));
    assert!(reachable(&lab, 1, 2));
    assert!(!reachable(&lab, 0, 1));
    assert!(!reachable(&lab, 2, 0));
    lab.verify_multicast(1, Duration::from_secs(2)).unwrap(); // within the segment
    lab.heal_all().unwrap();
    assert!(reachable(&lab, 0, 1));
    lab.verify_multicast(0, Duration::from_secs(2)).unwrap();

    drop(lab);
    assert!(
        netlab::lab_namespaces(&p).unwrap().is_empty(),
        "namespaces left after drop"
    );
}

#[test]
fn leftovers_removed_and_panic_cleans_up() {
    if !can_run("leftovers_removed_and_panic_cleans_up") {
        return;
    }
    let p = prefix("b");
    let mut cfg = LabConfig::new(p.clone(), 2);
    cfg.verify_multicast = false;
    // A "crashed" run leaves its namespaces behind...
    Lab::create(cfg.clone()).unwrap().persist();
    assert_eq!(netlab::lab_namespaces(&p).unwrap().len(), 3);
    assert!(netlab::list_labs().unwrap().iter().any(|l| l.prefix == p));
    // ...and the next create with the same prefix replaces them.
    let result = std::panic::catch_unwind(move || {
        let lab = Lab::create(cfg).unwrap();
        assert_eq!(netlab::lab_namespaces(lab.prefix()).unwrap().len(), 3);
        panic!("deliberate panic while the lab is up");
    });
    assert!(result.is_err());
    assert!(netlab::lab_namespaces(&p).unwrap().is_empty());
}

#[test]
fn cli_run_tears_down_and_reports_worst_status() {
    if !can_run("cli_run_tears_down_and_reports_worst_status") {
        return;
    }
    let p = prefix("c");
    let out = Command::new(NETLAB)
        .args(["run", "--hosts", "2", "--prefix", &p, "--"])
        .args(["sh", "-c", "echo {host} {addr} {index}; exit {index}"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("{p}-h2 10.77.")), "{stdout}");
    assert!(netlab::lab_namespaces(&p).unwrap().is_empty());

    let out = Command::new(NETLAB)
        .args(["exec", "--prefix", "nosuchlab", "--host", "1", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lab with prefix"));
}
