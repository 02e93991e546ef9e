//! Measures oracle throughput in membership events per second through a 3-replica raft
//! cluster in memory (perfect network, messages delivered as fast as the replicas produce
//! them), with batching: each `MultiJoin` / `MultiLeave` carries many processes × groups.
//!
//! A membership event is one member added to or removed from one group; it counts once it has
//! been applied by **all three** replicas (not just committed by the leader).
//!
//! ```text
//! cargo run -p vsync-control --release --example oracle_throughput [processes] [groups] [batch]
//! ```
//!
//! Defaults: 20000 processes, 20 groups, batches of 500 processes (× 20 groups = 10000
//! membership events per command).

use std::time::Instant;

use vsync_control::drmc::{McParams, McPolicy};
use vsync_control::oracle::{
    group_id, Command, Event, GroupJoin, GroupLeave, Replica, ReplicaConfig, Signature,
};
use vsync_dataplane::{GroupId, MemberId};

struct Cluster {
    replicas: Vec<Replica>,
    /// Membership events and views applied, per replica.
    events: Vec<u64>,
    views: Vec<u64>,
    applied: Vec<u64>,
}

impl Cluster {
    fn new() -> Cluster {
        let peers = vec![1, 2, 3];
        let replicas = peers
            .iter()
            .map(|&id| Replica::new(ReplicaConfig::new(id, peers.clone(), 1)).expect("replica"))
            .collect();
        Cluster {
            replicas,
            events: vec![0; 3],
            views: vec![0; 3],
            applied: vec![0; 3],
        }
    }

    /// Delivers messages until the network is quiet.
    fn pump(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.replicas.len() {
                let out = self.replicas[i].ready();
                for c in &out.committed {
                    self.applied[i] += 1;
                    if let Ok(events) = &c.result {
                        // Membership events are what the command asked for (decided views
                        // carry cumulative joined/left lists while a flush is pending).
                        self.events[i] += match c.request.as_ref().map(|r| &r.command) {
                            Some(Command::MultiJoin { joins }) => {
                                joins.iter().map(|j| j.members.len() as u64).sum()
                            }
                            Some(Command::MultiLeave { leaves }) => {
                                leaves.iter().map(|l| l.members.len() as u64).sum()
                            }
                            Some(Command::Join { .. } | Command::Leave { .. }) => 1,
                            _ => 0,
                        };
                        for e in events {
                            if let Event::NewView(_) = e {
                                self.views[i] += 1;
                            }
                        }
                    }
                }
                for (to, bytes) in out.messages {
                    any = true;
                    let _ = self.replicas[(to - 1) as usize].step(&bytes);
                }
            }
            if !any {
                return;
            }
        }
    }

    fn leader(&mut self) -> usize {
        for _ in 0..1000 {
            if let Some(i) = self.replicas.iter().position(Replica::is_leader) {
                return i;
            }
            for r in &mut self.replicas {
                r.tick();
            }
            self.pump();
        }
        panic!("no leader elected");
    }

    /// Proposes all commands (pipelined), then runs until every replica applied them.
    fn run(&mut self, commands: Vec<Command>) {
        let leader = self.leader();
        let target: Vec<u64> = self
            .applied
            .iter()
            .map(|a| a + commands.len() as u64)
            .collect();
        for (k, c) in commands.into_iter().enumerate() {
            self.replicas[leader].propose(c).expect("leader accepts");
            if k % 64 == 63 {
                self.pump();
            }
        }
        while self.applied.iter().zip(&target).any(|(a, t)| a < t) {
            self.pump();
            // Followers learn the final commit index from the next heartbeat.
            for r in &mut self.replicas {
                r.tick();
            }
        }
    }
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let processes = arg(1, 20_000) as u32;
    let groups = arg(2, 20);
    let batch = arg(3, 500).max(1);
    let sig = Signature::from_text("Update(int)");
    let mut cluster = Cluster::new();

    // Setup (not timed): register processes, create groups, enable Dr. Multicast.
    let t = Instant::now();
    cluster.run(
        (1..=processes)
            .map(|p| Command::RegisterProcess {
                member: MemberId::new(p, 1),
                addr: None,
            })
            .collect(),
    );
    let reg = t.elapsed();
    println!(
        "register: {processes} single-process commands in {:.3} s = {:.0} commands/s (applied on 3 replicas)",
        reg.as_secs_f64(),
        f64::from(processes) / reg.as_secs_f64()
    );
    let names: Vec<String> = (0..groups).map(|g| format!("group-{g}")).collect();
    let ids: Vec<GroupId> = names.iter().map(|n| group_id(n)).collect();
    let mut setup: Vec<Command> = names
        .iter()
        .map(|name| Command::CreateGroup {
            name: name.clone(),
            signature: sig.clone(),
            policy: McPolicy::Auto,
            creator: MemberId::new(1, 1),
        })
        .collect();
    setup.push(Command::RemapMulticast {
        params: McParams::default(),
    });
    cluster.run(setup);

    // Batched joins: every process but the creator joins every group.
    let joiners: Vec<MemberId> = (2..=processes).map(|p| MemberId::new(p, 1)).collect();
    let joins: Vec<Command> = joiners
        .chunks(batch)
        .map(|chunk| Command::MultiJoin {
            joins: ids
                .iter()
                .map(|g| GroupJoin {
                    group: *g,
                    signature: sig.clone(),
                    members: chunk.to_vec(),
                })
                .collect(),
        })
        .collect();
    let leaves: Vec<Command> = joiners
        .chunks(batch)
        .map(|chunk| Command::MultiLeave {
            leaves: ids
                .iter()
                .map(|g| GroupLeave {
                    group: *g,
                    members: chunk.to_vec(),
                })
                .collect(),
        })
        .collect();
    for (what, commands) in [("MultiJoin", joins), ("MultiLeave", leaves)] {
        let n = commands.len();
        let before_events = cluster.events[2];
        let before_views = cluster.views[2];
        let t = Instant::now();
        cluster.run(commands);
        let secs = t.elapsed().as_secs_f64();
        let events = cluster.events[2] - before_events;
        let views = cluster.views[2] - before_views;
        assert_eq!(cluster.events[0], cluster.events[2]);
        println!(
            "{what}: {n} commands, {events} membership events, {views} views in {secs:.3} s = \
             {:.0} membership events/s, {:.0} views/s, {:.0} commands/s",
            events as f64 / secs,
            views as f64 / secs,
            n as f64 / secs
        );
    }
    // Unbatched: one Join per command, to show what batching buys.
    let single: Vec<Command> = (2..=processes.min(5001))
        .map(|p| Command::Join {
            group: ids[0],
            member: MemberId::new(p, 1),
            signature: sig.clone(),
        })
        .collect();
    let n = single.len();
    let t = Instant::now();
    cluster.run(single);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "Join (unbatched): {n} commands in {secs:.3} s = {:.0} membership events/s",
        n as f64 / secs
    );
    let _ = ids;
}
