//! Real network, real processes: a 4-host network-namespace lab (bridge, IP-multicast routes,
//! 10 % loss on every receiver's port), one sender and three receivers, each a separate
//! `vsync-bench member` process.
//!
//! * reliable mode, io_uring backend and portable backend: every message is delivered exactly
//!   once, in FIFO order, with identical bytes at every receiver — checked from the members'
//!   delivery audit logs by `vsync_dataplane::audit::check`;
//! * raw mode: loses messages under the same loss and never blocks the sender.
//!
//! Needs root and iproute2 (CI runs as root); prints "skipped" otherwise. The lab is removed
//! even when an assertion fails.

use std::path::PathBuf;
use std::process::{Command, Output};

use vsync_tools::json::Json;

const BENCH: &str = env!("CARGO_BIN_EXE_vsync-bench");

fn can_run() -> bool {
    vsync_tools::netlab::is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn lab(mode: &str, prefix: &str, env: &[(&str, String)]) -> Output {
    Command::new(BENCH)
        .args([
            "lab",
            "--hosts",
            "4",
            "--modes",
            mode,
            "--sizes",
            "700",
            "--senders",
            "1",
            "--duration",
            "2",
            "--rate",
            "20000",
            "--loss",
            "10",
            "--prefix",
            prefix,
            "--json",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run vsync-bench lab")
}

fn last_json(out: &Output) -> Json {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Json::parse(stdout.lines().last().expect("a JSON line")).expect("valid JSON")
}

fn get_u64(j: &Json, path: &[&str]) -> u64 {
    let mut v = j;
    for k in path {
        v = v
            .get(k)
            .unwrap_or_else(|| panic!("missing {path:?} in {j}"));
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not an integer"))
}

fn no_namespace_left(prefix: &str) {
    let ns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains(prefix),
        "namespaces of {prefix} left behind"
    );
}

fn reliable_exactly_once(engine: &str) {
    if !can_run() {
        println!("reliable over a lossy lab ({engine}): skipped: needs root and iproute2");
        return;
    }
    let prefix = format!("lr{}{}", &engine[..1], std::process::id() % 10_000);
    let dir = std::env::temp_dir().join(format!("vsync-audit-{prefix}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("audit dir");
    let pattern = dir.join("audit-{index}.jsonl");
    let out = lab(
        "reliable",
        &prefix,
        &[
            ("VSYNC_ENGINE", engine.to_string()),
            ("VSYNC_AUDIT_LOG", pattern.to_string_lossy().into_owned()),
        ],
    );
    no_namespace_left(&prefix);
    let j = last_json(&out);
    let run = &j.get("runs").and_then(Json::as_array).expect("runs")[0];
    let delivered = get_u64(run, &["aggregate", "delivered"]);
    assert_eq!(
        get_u64(run, &["aggregate", "lost"]),
        0,
        "reliable mode lost messages: {run}"
    );
    assert!(delivered >= 3 * 20_000, "too few deliveries: {delivered}");
    let logs: Vec<PathBuf> = (0..4)
        .map(|i| dir.join(format!("audit-{i}.jsonl")))
        .collect();
    for l in &logs {
        assert!(l.exists(), "missing audit log {}", l.display());
    }
    let report =
        vsync_dataplane::audit::check(&logs).unwrap_or_else(|e| panic!("audit check failed: {e}"));
    println!("{engine}: {delivered} deliveries; audit: {report:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reliable_over_lossy_lab_io_uring() {
    reliable_exactly_once("uring");
}

#[test]
fn reliable_over_lossy_lab_portable() {
    reliable_exactly_once("portable");
}

#[test]
fn raw_over_lossy_lab_loses_and_never_blocks() {
    if !can_run() {
        println!("raw over a lossy lab: skipped: needs root and iproute2");
        return;
    }
    let prefix = format!("lraw{}", std::process::id() % 10_000);
    let out = lab("raw", &prefix, &[]);
    no_namespace_left(&prefix);
    let j = last_json(&out);
    let run = &j.get("runs").and_then(Json::as_array).expect("runs")[0];
    let lost = get_u64(run, &["aggregate", "lost"]);
    let delivered = get_u64(run, &["aggregate", "delivered"]);
    assert!(
        delivered > 0 && lost > 0,
        "raw mode under 10 % loss: delivered {delivered}, lost {lost}"
    );
    let senders = run
        .get("senders_detail")
        .and_then(Json::as_array)
        .expect("senders_detail");
    assert_eq!(
        get_u64(&senders[0], &["would_block"]),
        0,
        "raw sends must never block"
    );
}
