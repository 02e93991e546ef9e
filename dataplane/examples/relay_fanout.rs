//! Flat unicast fan-out versus the relay tree, measured in the seeded simulator (virtual time).
//!
//! For groups of 16, 64 and 128 members without an IP-multicast address, one sender multicasts
//! a burst of messages (and, separately, a single message) over links of a given rate (each
//! member's egress serializes its copies: `SimConfig::egress_bytes_per_sec`) and 20–30 µs of
//! one-way delay. Reported per configuration: the sender's first-transmission copies per data
//! datagram and per message, its total egress per message (repairs, reports, heartbeats
//! included), the copies other members relayed per message, and delivery times (admission to
//! delivery at the last member).
//!
//! ```text
//! cargo run --release -p vsync-dataplane --example relay_fanout [-- <link Gb/s, default 10> [auth]]
//! ```
//!
//! `auth` seals every datagram with a system key (AES-GCM), so receivers' replay windows see
//! relayed datagrams (which keep their origin's packet number) arrive after newer direct ones;
//! any receiver drops are printed under the table.

use std::time::Duration;

use vsync_dataplane::config::ProtocolConfig;
use vsync_dataplane::protocol::tree;
use vsync_dataplane::sim::{run, SimConfig, SimReport};

fn config(
    members: usize,
    messages: usize,
    tree: bool,
    link_bytes_per_sec: u64,
    auth: bool,
) -> SimConfig {
    let mut c = SimConfig::swarm(1);
    c.members = members;
    c.senders = 1;
    c.messages_per_sender = messages;
    c.max_message = 1000;
    c.p2p_per_member = 0;
    c.raw_per_member = 0;
    c.loss = 0.0;
    c.duplicate = 0.0;
    c.corrupt = 0.0;
    c.delay_min = Duration::from_micros(20);
    c.delay_max = Duration::from_micros(30);
    c.multicast = false;
    c.system_key = auth;
    c.group_key = false;
    c.sink_capacity = 1 << 20;
    c.drain_interval = Duration::from_micros(50);
    c.partition = None;
    c.rate_limit = None;
    c.protocol = ProtocolConfig {
        relay_threshold: if tree { 2 } else { 0 },
        relay_fanout: 4,
        ..ProtocolConfig::default()
    };
    c.egress_bytes_per_sec = Some(link_bytes_per_sec);
    c.time_limit = Duration::from_secs(30);
    c
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let gbps: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10.0);
    let auth = std::env::args().nth(2).is_some_and(|a| a == "auth");
    let rate = (gbps * 1e9 / 8.0) as u64;
    let burst = 200;
    println!(
        "relay fan-out: 1 sender, burst of {burst} messages (≤ 1000 B), {gbps} Gb/s links, 20–30 µs one-way, tree fanout 4{}",
        if auth { ", AES-GCM authenticated" } else { "" }
    );
    let mut drops = Vec::new();
    println!(
        "{:>7} {:>5} {:>6} | {:>13} {:>13} {:>13} {:>13} | {:>10} {:>10} {:>10} | {:>10}",
        "members",
        "mode",
        "levels",
        "copies/dgram",
        "copies/msg",
        "egress/msg",
        "relayed/msg",
        "burst ms",
        "mean ms",
        "max ms",
        "single ms"
    );
    for members in [16, 64, 128] {
        for tree_on in [false, true] {
            let c = config(members, burst, tree_on, rate, auth);
            let r: SimReport = run(&c).unwrap_or_else(|f| panic!("{f}"));
            let one =
                run(&config(members, 1, tree_on, rate, auth)).unwrap_or_else(|f| panic!("{f}"));
            if !r.drops.is_empty() {
                drops.push(format!(
                    "{members} {}: {:?}",
                    if tree_on { "tree" } else { "flat" },
                    r.drops
                ));
            }
            let msgs = burst as f64;
            let levels = if tree_on { tree::levels(members, 4) } else { 2 };
            println!(
                "{:>7} {:>5} {:>6} | {:>13.2} {:>13.2} {:>13.2} {:>13.2} | {:>10.3} {:>10.3} {:>10.3} | {:>10.3}",
                members,
                if tree_on { "tree" } else { "flat" },
                levels,
                r.first_tx_copies[0] as f64 / r.first_tx_datagrams[0].max(1) as f64,
                r.first_tx_copies[0] as f64 / msgs,
                r.egress[0] as f64 / msgs,
                r.relayed_copies as f64 / msgs,
                ms(r.virtual_time),
                ms(r.latency_mean),
                ms(r.latency_max),
                ms(one.latency_max),
            );
        }
    }
    for d in drops {
        println!("receiver drops, {d}");
    }
}
