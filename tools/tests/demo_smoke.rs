//! The README's main job (`vsync-demo`) runs end to end: the slides' program over the
//! embedded oracle passes its checks, and a short benchmark delivers every message exactly
//! once and in order (the binary exits non-zero otherwise).

use std::process::Command;

#[test]
fn vsync_demo_passes_its_checks() {
    let out = Command::new(env!("CARGO_BIN_EXE_vsync-demo"))
        .args(["--duration", "0.3", "--window", "512"])
        .output()
        .expect("run vsync-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "vsync-demo failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("identical order at every member: true"),
        "{stdout}"
    );
    assert!(stdout.contains("left gracefully"), "{stdout}");
    for row in ["raw UDP", "Send", "OrderedSend"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(row)),
            "no {row} row:\n{stdout}"
        );
    }
    assert!(stdout.contains("vsync demo: all checks passed"), "{stdout}");
}
