//! Oracle replicas on durable storage (`oracle::durable`): a three-replica cluster over an
//! in-memory network, each replica in its own temporary directory. Replicas are killed
//! (dropped) and restarted from their directories under the same id — a follower, then the
//! leader — and must converge on the same state as the others. A torn final log record is
//! tolerated; a corrupted record in the middle of the log is a clear error.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use vsync_control::oracle::durable::{self, DurableError, LOG_FILE};
use vsync_control::oracle::{Command, ProposeError, Replica, ReplicaConfig};
use vsync_dataplane::MemberId;

/// A unique temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "vsync-oracle-durable-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const PEERS: [u64; 3] = [1, 2, 3];

fn config(id: u64) -> ReplicaConfig {
    let mut c = ReplicaConfig::new(id, PEERS.to_vec(), 11);
    // Compact often so snapshots (taken and sent) are on disk too.
    c.snapshot_interval = 7;
    c
}

struct Cluster {
    dirs: Vec<TempDir>,
    nodes: Vec<Option<Replica>>,
}

impl Cluster {
    fn new() -> Cluster {
        let dirs: Vec<TempDir> = PEERS
            .iter()
            .map(|id| TempDir::new(&format!("r{id}")))
            .collect();
        let nodes = PEERS
            .iter()
            .map(|id| Some(durable::open_replica(config(*id), &dirs[*id as usize - 1].0).unwrap()))
            .collect();
        Cluster { dirs, nodes }
    }

    fn dir(&self, id: u64) -> &Path {
        &self.dirs[id as usize - 1].0
    }

    fn kill(&mut self, id: u64) {
        self.nodes[id as usize - 1] = None;
    }

    fn restart(&mut self, id: u64) {
        assert!(self.nodes[id as usize - 1].is_none());
        let r = durable::open_replica(config(id), self.dir(id)).unwrap();
        assert!(r.storage().is_durable());
        self.nodes[id as usize - 1] = Some(r);
    }

    /// Delivers messages among live replicas until quiet.
    fn pump(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                let Some(r) = self.nodes[i].as_mut() else {
                    continue;
                };
                let out = r.ready();
                for (to, bytes) in out.messages {
                    any = true;
                    if let Some(t) = self.nodes[to as usize - 1].as_mut() {
                        let _ = t.step(&bytes);
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    fn round(&mut self) {
        for r in self.nodes.iter_mut().flatten() {
            r.tick();
        }
        self.pump();
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .flatten()
            .find(|r| r.is_leader())
            .map(Replica::id)
    }

    fn await_leader(&mut self) -> u64 {
        for _ in 0..500 {
            if let Some(l) = self.leader() {
                return l;
            }
            self.round();
        }
        panic!("no leader elected");
    }

    /// Commits `RegisterProcess` for each of `members` through the leader.
    fn commit(&mut self, members: std::ops::RangeInclusive<u32>) {
        for p in members {
            let mut tries = 0;
            loop {
                let l = self.await_leader();
                let r = self.nodes[l as usize - 1].as_mut().unwrap();
                match r.propose(Command::RegisterProcess {
                    member: MemberId::new(p, 1),
                    addr: None,
                }) {
                    Ok(_) => break,
                    Err(ProposeError::NotLeader { .. } | ProposeError::Dropped) => {
                        tries += 1;
                        assert!(tries < 100, "proposal of {p} never accepted");
                        self.round();
                    }
                    Err(e) => panic!("proposal of {p}: {e}"),
                }
            }
            self.pump();
        }
    }

    /// Runs rounds until every live replica applied the same state including `members`.
    fn converge(&mut self, members: std::ops::RangeInclusive<u32>) {
        for _ in 0..300 {
            self.round();
            let live: Vec<&Replica> = self.nodes.iter().flatten().collect();
            let all_in = live
                .iter()
                .all(|r| members.clone().all(|p| r.state().process(p).is_some()));
            if all_in && live.iter().all(|r| r.state() == live[0].state()) {
                return;
            }
        }
        let live: Vec<(u64, u64, u64)> = self
            .nodes
            .iter()
            .flatten()
            .map(|r| (r.id(), r.commit_index(), r.applied_index()))
            .collect();
        panic!("replicas did not converge: (id, commit, applied) = {live:?}");
    }
}

#[test]
fn killed_replicas_restart_from_disk_under_the_same_id() {
    let mut c = Cluster::new();
    c.await_leader();
    c.commit(1..=10);
    c.converge(1..=10);

    // Kill a follower; the other two keep committing; restart it from its directory.
    let leader = c.leader().unwrap();
    let follower = PEERS.iter().copied().find(|i| *i != leader).unwrap();
    c.kill(follower);
    c.commit(11..=25);
    c.converge(11..=25);
    c.restart(follower);
    {
        let r = c.nodes[follower as usize - 1].as_ref().unwrap();
        assert_eq!(r.storage().boots(), 2, "boot counter persisted");
        assert!(r.term() > 0, "term persisted");
        assert!(r.state().process(10).is_some(), "committed log replayed");
    }
    c.commit(26..=30);
    c.converge(1..=30);

    // Kill the leader; the others elect a new one and commit; restart the old leader.
    let old = c.leader().unwrap();
    let old_term = c.nodes[old as usize - 1].as_ref().unwrap().term();
    c.kill(old);
    let new = c.await_leader();
    assert_ne!(new, old);
    c.commit(31..=40);
    c.converge(31..=40);
    c.restart(old);
    {
        let r = c.nodes[old as usize - 1].as_ref().unwrap();
        assert!(r.term() >= old_term, "term never goes back");
        assert!(r.state().process(30).is_some());
        assert!(!r.is_leader());
    }
    c.commit(41..=45);
    c.converge(1..=45);
    for r in c.nodes.iter().flatten() {
        assert!(
            r.storage().snapshot_index() > 0,
            "replica {} compacted",
            r.id()
        );
        assert!(!r.is_broken());
    }
}

#[test]
fn a_torn_tail_is_tolerated_and_a_corrupt_middle_is_an_error() {
    let mut c = Cluster::new();
    c.await_leader();
    c.commit(1..=5);
    c.converge(1..=5);
    let leader = c.leader().unwrap();
    let victim = PEERS.iter().copied().find(|i| *i != leader).unwrap();
    c.kill(victim);
    // A crash mid-append: a record announced as 100 bytes of which only 10 were written.
    let log = c.dir(victim).join(LOG_FILE);
    {
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&100u32.to_le_bytes()).unwrap();
        f.write_all(&[0xAB; 10]).unwrap();
    }
    c.commit(6..=8);
    c.restart(victim);
    c.commit(9..=12);
    c.converge(1..=12);

    // Damage a byte inside the first record (the log's base) while records follow it.
    c.kill(victim);
    let mut bytes = fs::read(&log).unwrap();
    assert!(bytes.len() > 29 + 12, "records follow the base record");
    bytes[6] ^= 0xFF;
    fs::write(&log, &bytes).unwrap();
    match durable::open(c.dir(victim), &PEERS) {
        Err(e @ DurableError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("corrupt") && msg.contains("checksum"), "{msg}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    // The rest of the cluster is unaffected.
    c.commit(13..=15);
    c.converge(1..=15);
}
