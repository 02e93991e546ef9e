//! Non-member clients: P2P queries to a representative, `AllowClientRequests`, and re-homing
//! after the representative's process is SIGKILLed (the members are real child processes:
//! this test binary re-executed with `VSYNC_CLIENT_CHILD`; the test process itself hosts the
//! embedded oracle and is the client).

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vsync::query::QueryError;
use vsync::{Client, Group, System, Timeout, TimeoutAction, VsyncError};

const CHILD: &str = "VSYNC_CLIENT_CHILD";
/// Allowed for clients: answers with the member's process id.
const WHO: u32 = 0;
/// Not allowed for clients.
const SECRET: u32 = 1;

/// One member process, when re-executed by the test below; a no-op otherwise.
#[test]
fn client_child() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let sys = System::from_env()
        .expect("environment")
        .join_timeout(Duration::from_secs(30))
        .start()
        .expect("member starts");
    let g = Group::new(&sys, "svc").unwrap();
    g.on(WHO, |_x: u32| std::process::id()).unwrap();
    g.on(SECRET, || 42u32).unwrap();
    g.allow_client_requests(WHO).unwrap();
    g.join().unwrap();
    println!("joined");
    // Serve until killed (or, as a safety net, for a minute).
    std::thread::sleep(Duration::from_secs(60));
    let _ = sys.shutdown();
}

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn who(c: &Client) -> Result<u32, VsyncError> {
    let r = c.p2p_query(Timeout::millis(15_000, TimeoutAction::Abort), WHO, (7u32,))?;
    let v: Vec<u32> = r.decode()?;
    assert_eq!(v.len(), 1, "one reply");
    Ok(v[0])
}

#[test]
fn client_queries_and_is_rehomed_after_its_representative_is_killed() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // This process hosts the oracle and is the client.
    let sys = System::builder()
        .oracle_port(port)
        .join_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    assert!(sys.hosts_oracle());
    let exe = std::env::current_exe().unwrap();
    let mut children = Kill(Vec::new());
    for _ in 0..2 {
        children.0.push(
            Command::new(&exe)
                .args(["--exact", "client_child", "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .env("VSYNC_ORACLE_PORT", port.to_string())
                .env_remove("VSYNC_HOSTS")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
    }
    let pids: Vec<u32> = children.0.iter().map(|c| c.id()).collect();

    // A client of a group that does not exist yet: no members, so the query times out.
    let c = Client::new(&sys, "svc").unwrap();
    let t = Instant::now();
    let rep = loop {
        match who(&c) {
            Ok(pid) => break pid,
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(60), "no answer: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert!(pids.contains(&rep), "answered by a member process");
    // The representative stays fixed while it lives.
    for _ in 0..5 {
        assert_eq!(who(&c).unwrap(), rep);
    }
    // A code the group did not open to clients.
    match c.p2p_query(Timeout::default(), SECRET, ()) {
        Err(VsyncError::Query(QueryError::Aborted { reason, .. })) => {
            assert!(reason.contains("not enabled client requests"), "{reason}")
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    // A group with no members at all: the timeout's action applies.
    let nobody = Client::new(&sys, "no-such-group").unwrap();
    let r = nobody
        .p2p_query(Timeout::millis(300, TimeoutAction::Failure), WHO, (1u32,))
        .unwrap();
    assert!(r.is_empty());

    // SIGKILL the representative: the next query is reissued at the other member.
    let i = pids.iter().position(|p| *p == rep).unwrap();
    children.0[i].kill().unwrap();
    children.0[i].wait().unwrap();
    let t = Instant::now();
    let next = who(&c).expect("re-homed query");
    assert_ne!(next, rep, "answered by the surviving member");
    assert!(pids.contains(&next));
    assert!(t.elapsed() < Duration::from_secs(15));
    for _ in 0..3 {
        assert_eq!(who(&c).unwrap(), next);
    }
    let stats = sys.client_stats().unwrap();
    assert!(stats.rehomed >= 1, "{stats:?}");
    assert_eq!(stats.malformed, 0);
    drop(children);
    sys.shutdown().unwrap();
}
