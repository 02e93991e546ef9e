//! Smoke runs of `vsync-bench ordered`: the command works end to end (raw members, an oracle
//! and full-stack members as real processes), every mode delivers something, and Send /
//! OrderedSend through the full stack lose nothing. Speed is never asserted.
//!
//! The loopback run needs nothing special. The namespace-lab run needs root and iproute2
//! (prints "skipped" otherwise); `vsync-bench ordered` removes its lab on every path.

use std::process::Command;

use vsync_tools::json::Json;

const BENCH: &str = env!("CARGO_BIN_EXE_vsync-bench");
const MEMBER: &str = env!("CARGO_BIN_EXE_vsync-member");
const ORACLE: &str = env!("CARGO_BIN_EXE_vsync-oracle");

fn run(extra: &[&str]) -> Json {
    let out = Command::new(BENCH)
        .args(["ordered", "--json", "--hosts", "3", "--sizes", "64"])
        .args(["--modes", "raw,send,ordered"])
        .args(["--duration", "1", "--warmup", "0.2", "--drain-ms", "4000"])
        .args(["--member-bin", MEMBER, "--oracle-bin", ORACLE])
        .args(extra)
        .output()
        .expect("run vsync-bench ordered");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "vsync-bench ordered failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON output:\n{stdout}\n{stderr}"));
    Json::parse(line).expect("valid JSON")
}

fn check(j: &Json, expected_rows: usize) {
    let runs = j.get("runs").and_then(Json::as_array).expect("runs");
    assert_eq!(runs.len(), expected_rows, "{j}");
    for r in runs {
        let mode = r.get("mode").and_then(Json::as_str).expect("mode");
        assert!(r.get("error").is_none(), "row failed: {r}");
        let u = |k: &str| r.get(k).and_then(Json::as_u64).unwrap_or(0);
        assert!(u("delivered") > 0, "{mode} delivered nothing: {r}");
        assert!(u("expected") > 0, "{mode}: {r}");
        assert!(
            r.get("msgs_per_s_per_rx")
                .and_then(Json::as_f64)
                .is_some_and(|v| v > 0.0),
            "{r}"
        );
        if mode != "raw" {
            assert_eq!(u("lost"), 0, "{mode} lost messages: {r}");
            assert_eq!(u("duplicate"), 0, "{mode} duplicated messages: {r}");
            assert_eq!(u("delivered"), u("expected"), "{r}");
        }
    }
}

#[test]
fn ordered_bench_smoke_on_loopback() {
    let j = run(&["--loopback", "--senders", "1,all"]);
    assert_eq!(j.get("topology").and_then(Json::as_str), Some("loopback"));
    check(&j, 6);
}

#[test]
fn ordered_bench_smoke_in_namespace_lab() {
    let root = vsync_tools::netlab::is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
    if !root {
        println!("ordered bench in a namespace lab: skipped: needs root and iproute2");
        return;
    }
    let prefix = format!("tob{}", std::process::id() % 10_000);
    let j = run(&["--senders", "all", "--prefix", &prefix]);
    assert_eq!(j.get("topology").and_then(Json::as_str), Some("lab"));
    check(&j, 3);
    let left = vsync_tools::netlab::lab_namespaces(&prefix).unwrap_or_default();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
