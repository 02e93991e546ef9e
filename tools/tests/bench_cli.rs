//! End-to-end tests of the `vsync-bench` binary: loopback raw runs (JSON fields,
//! deliveries), ping-pong, member processes, argument errors, and (as root) a small lab
//! sweep. Loopback traffic stays on 127.0.0.1 with TTL 1.

use std::process::{Command, Output};

use vsync_tools::json::Json;
use vsync_tools::payload::now_ns;

const BENCH: &str = env!("CARGO_BIN_EXE_vsync-bench");

fn bench(args: &[&str]) -> Output {
    Command::new(BENCH)
        .args(args)
        .output()
        .expect("run vsync-bench")
}

fn bench_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BENCH)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run vsync-bench")
}

fn json_of(out: &Output) -> Json {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in {stdout:?}"));
    Json::parse(line).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"))
}

fn u(j: &Json, path: &[&str]) -> u64 {
    let mut v = j;
    for k in path {
        v = v
            .get(k)
            .unwrap_or_else(|| panic!("missing {path:?} in {j}"));
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not an integer: {v}"))
}

fn f(j: &Json, path: &[&str]) -> f64 {
    let mut v = j;
    for k in path {
        v = v
            .get(k)
            .unwrap_or_else(|| panic!("missing {path:?} in {j}"));
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {v}"))
}

#[test]
fn raw_loopback_json_has_the_fields() {
    let out = bench(&[
        "--mode",
        "raw",
        "--members",
        "3",
        "--senders",
        "1",
        "--size",
        "512",
        "--duration",
        "1",
        "--rate",
        "20000",
        "--json",
    ]);
    let j = json_of(&out);
    assert_eq!(j.get("mode").and_then(Json::as_str), Some("raw"));
    assert_eq!(j.get("topology").and_then(Json::as_str), Some("loopback"));
    assert_eq!(u(&j, &["members"]), 3);
    assert_eq!(u(&j, &["size"]), 512);
    let receivers = j.get("receivers").and_then(Json::as_array).unwrap();
    assert_eq!(receivers.len(), 2, "members 1 and 2 receive from member 0");
    for r in receivers {
        for k in ["expected", "delivered", "lost", "duplicate", "out_of_order"] {
            u(r, &[k]);
        }
        assert!(u(r, &["delivered"]) > 0);
        assert!(f(r, &["msgs_per_s"]) > 0.0);
        assert!(f(r, &["mb_per_s"]) > 0.0);
        for k in ["p50", "p90", "p99", "p999", "max"] {
            assert!(f(r, &["latency_us", k]) > 0.0, "latency {k}");
        }
        assert!(r
            .get("counters")
            .and_then(|c| c.get("rx_datagrams"))
            .is_some());
    }
    let a = j.get("aggregate").unwrap();
    assert!(u(a, &["delivered"]) > 0);
    assert_eq!(u(a, &["duplicate"]), 0);
    assert!(f(a, &["loss_pct"]) >= 0.0);
    assert!(f(a, &["latency_us", "p99"]) >= f(a, &["latency_us", "p50"]));
    let senders = j.get("senders_detail").and_then(Json::as_array).unwrap();
    assert_eq!(senders.len(), 1);
    let sent = u(&senders[0], &["sent"]);
    assert!(sent > 0);
    // Exact accounting: every receiver expects what the sender sent.
    for r in receivers {
        assert_eq!(u(r, &["expected"]), sent);
        assert_eq!(u(r, &["delivered"]) + u(r, &["lost"]), sent);
    }
    // Progress lines go to stderr, not into the JSON.
    assert!(String::from_utf8_lossy(&out.stderr).contains("msg/s"));
}

#[test]
fn injected_loss_is_counted_not_hidden() {
    let out = bench(&[
        "--members",
        "2",
        "--size",
        "64",
        "--duration",
        "1",
        "--rate",
        "20000",
        "--loss",
        "20",
        "--json",
    ]);
    let j = json_of(&out);
    let a = j.get("aggregate").unwrap();
    let loss = f(a, &["loss_pct"]);
    assert!(
        (10.0..30.0).contains(&loss),
        "loss {loss}% for 20% injected"
    );
    assert_eq!(
        u(a, &["lost"]),
        u(a, &["counters", "rx_injected_drops"]),
        "every injected drop shows up as a lost message"
    );
}

#[test]
fn unicast_all_senders() {
    let out = bench(&[
        "--members",
        "3",
        "--senders",
        "all",
        "--unicast",
        "--size",
        "256",
        "--duration",
        "1",
        "--rate",
        "5000",
        "--json",
    ]);
    let j = json_of(&out);
    assert_eq!(j.get("transport").and_then(Json::as_str), Some("unicast"));
    let receivers = j.get("receivers").and_then(Json::as_array).unwrap();
    assert_eq!(receivers.len(), 3);
    for r in receivers {
        assert!(u(r, &["delivered"]) > 0);
    }
}

#[test]
fn pingpong_reports_rtt() {
    let out = bench(&["--pingpong", "--size", "64", "--duration", "1", "--json"]);
    let j = json_of(&out);
    assert_eq!(j.get("pingpong").and_then(Json::as_bool), Some(true));
    assert!(u(&j, &["ping", "replies"]) > 0);
    let p50 = f(&j, &["ping", "rtt_us", "p50"]);
    assert!(p50 > 0.0 && p50 < 100_000.0, "rtt p50 {p50} µs");
    assert!(f(&j, &["ping", "rtt_us", "max"]) >= p50);
}

#[test]
fn member_processes_on_loopback() {
    // Two `member` processes on 127.0.0.1 sharing a start time on the monotonic clock.
    let port = 40_000 + (std::process::id() % 10_000) as u16;
    let group = format!("239.255.203.{}:{port}", std::process::id() % 250);
    let start = (now_ns() + 700_000_000).to_string();
    let spawn = |index: &str| {
        Command::new(BENCH)
            .args([
                "member",
                "--index",
                index,
                "--members",
                "127.0.0.1,127.0.0.1",
            ])
            .args(["--group", &group, "--iface", "127.0.0.1", "--size", "200"])
            .args([
                "--duration",
                "0.5",
                "--rate",
                "5000",
                "--start-at-ns",
                &start,
            ])
            .args(["--tag", "4242"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("0");
    let b = spawn("1");
    let ja = json_of(&a.wait_with_output().unwrap());
    let jb = json_of(&b.wait_with_output().unwrap());
    let sent = u(&ja, &["sent"]);
    assert!(sent > 1000, "sent {sent}");
    let from0 = &jb.get("per_sender").and_then(Json::as_array).unwrap()[0];
    let got = u(from0, &["unique"]);
    // Loopback at 5k msg/s normally loses nothing; allow a little for a starved CI box.
    assert!(got * 100 >= sent * 95, "member 1 got {got} of {sent}");
    assert!(jb.get("latency_hist").and_then(Json::as_array).is_some());
}

#[test]
fn bad_flags_give_clear_errors() {
    let out = bench(&["--size", "5"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--size") && err.contains("at least 24"),
        "{err}"
    );

    let out = bench(&["--senders", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));

    let out = bench(&["--mode", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mode"));

    let out = bench(&["--members", "3", "--senders", "4", "--duration", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than the 3 members"));

    let out = bench_env(
        &["--mode", "reliable", "--duration", "1"],
        &[("VSYNC_ENGINE", "bogus")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("VSYNC_ENGINE=bogus: expected one of auto, uring, portable"));

    let out = bench(&["--duration", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn lab_sweep_as_root() {
    if !vsync_tools::netlab::is_root() || Command::new("ip").arg("-V").output().is_err() {
        println!("lab_sweep_as_root: skipped: needs root and iproute2");
        return;
    }
    let prefix = format!("bct{}", std::process::id() % 100_000);
    let out = bench(&[
        "lab",
        "--hosts",
        "3",
        "--modes",
        "raw,reliable",
        "--sizes",
        "256",
        "--senders",
        "1",
        "--duration",
        "1",
        "--rate",
        "5000",
        "--prefix",
        &prefix,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let j = Json::parse(stdout.lines().last().unwrap()).unwrap();
    let runs = j.get("runs").and_then(Json::as_array).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].get("topology").and_then(Json::as_str), Some("lab"));
    assert!(u(&runs[0], &["aggregate", "delivered"]) > 0);
    assert_eq!(
        runs[0]
            .get("receivers")
            .and_then(Json::as_array)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(runs[1].get("mode").and_then(Json::as_str), Some("reliable"));
    assert!(u(&runs[1], &["aggregate", "delivered"]) > 0);
    assert_eq!(u(&runs[1], &["aggregate", "lost"]), 0);
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains(&prefix),
        "lab namespaces left behind"
    );
}
