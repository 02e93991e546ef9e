//! The three-member program of Ken Birman's slides "Understanding our Isis example program",
//! in vsync. Run it as three processes (the first one started hosts the embedded oracle):
//!
//! ```text
//! cargo run -p vsync --example slides -- 0 &
//! cargo run -p vsync --example slides -- 1 &
//! cargo run -p vsync --example slides -- 2
//! ```
//!
//! (the argument is only a label; ranks come from the join order, as in the slides). Each
//! member OrderedSends five `(myRank, n)` tuples once the view has three members; every
//! member's database therefore holds the same 15 tuples in the same order. The rank-1 member
//! then issues three OrderedQueries; each member scans every third tuple (index % 3 ==
//! myRank), so every tuple is scanned exactly once and each query's answers are 0..4. Unlike
//! the slides' `WaitForever`, the rank-1 member finally OrderedSends DONE and every member
//! prints its database and shuts down (the oracle's host last).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vsync::{Group, NReplies, System, Timeout, VsyncError};

/// Request codes (the slides' `UPDATE` and `LOOKUP`, plus `DONE` to end the demo).
pub const UPDATE: u32 = 0;
/// Query code.
pub const LOOKUP: u32 = 1;
/// End of the demo.
pub const DONE: u32 = 2;

#[derive(Default)]
struct State {
    my_rank: usize,
    go: bool,
    dbfull: bool,
    done: bool,
    /// The database: (rank, value) tuples in delivery order.
    database: Vec<(i32, i32)>,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn wait_for(s: &Shared, cond: impl Fn(&State) -> bool) {
    let (m, cv) = &**s;
    let mut st = m.lock().unwrap_or_else(|p| p.into_inner());
    while !cond(&st) {
        st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

/// Runs one member; `label` only decorates the output.
pub fn run(label: &str) -> Result<(), VsyncError> {
    say(format!(
        "Isis: Searching for the Isis ORACLE... (member {label})"
    ));
    let sys = System::start()?;
    if sys.hosts_oracle() {
        say("Isis: this process hosts the ORACLE".into());
    }
    let g = Group::new(&sys, "foo")?;
    let s: Shared = Arc::default();

    let st = s.clone();
    g.on_view(move |v| {
        say(format!("New View: {v}"));
        let (m, cv) = &*st;
        let mut st = m.lock().unwrap_or_else(|p| p.into_inner());
        st.my_rank = v.my_rank().unwrap_or(0);
        if v.len() == 3 {
            st.go = true;
        }
        cv.notify_all();
    })?;
    let st = s.clone();
    g.on(UPDATE, move |rank: i32, n: i32| {
        let (m, cv) = &*st;
        let mut st = m.lock().unwrap_or_else(|p| p.into_inner());
        st.database.push((rank, n));
        say(format!("New tuple: {rank}/{n}"));
        if st.database.len() == 15 {
            st.dbfull = true;
        }
        cv.notify_all();
    })?;
    let st = s.clone();
    g.on(LOOKUP, move |arg: i32| -> Vec<i32> {
        say(format!("=== Query for arg={arg}"));
        let (m, _) = &*st;
        let st = m.lock().unwrap_or_else(|p| p.into_inner());
        let mut answer = Vec::new();
        for (index, (rank, value)) in st.database.iter().enumerate() {
            if index % 3 == st.my_rank {
                say(format!("Looking at {rank}/{value}"));
                if *rank == arg {
                    say(format!("Including {rank}/{value}"));
                    answer.push(*value);
                }
            }
        }
        answer
    })?;
    let st = s.clone();
    g.on(DONE, move || {
        let (m, cv) = &*st;
        m.lock().unwrap_or_else(|p| p.into_inner()).done = true;
        cv.notify_all();
    })?;

    g.join()?;
    wait_for(&s, |st| st.go);
    let my_rank = s.0.lock().unwrap_or_else(|p| p.into_inner()).my_rank;
    for n in 0..5 {
        g.ordered_send(UPDATE, (my_rank as i32, n))?;
    }
    wait_for(&s, |st| st.dbfull);
    if my_rank == 1 {
        for n in 0..3 {
            let results: Vec<Vec<i32>> = g
                .ordered_query(NReplies::All, Timeout::default(), LOOKUP, (n,))?
                .decode()?;
            let values: Vec<String> = results.iter().flatten().map(|v| v.to_string()).collect();
            say(format!("\r\nAnswers for Query rank={n}"));
            say(values.join(" "));
        }
        g.ordered_send(DONE, ())?;
    }
    wait_for(&s, |st| st.done);
    let db =
        s.0.lock()
            .unwrap_or_else(|p| p.into_inner())
            .database
            .clone();
    say(format!("Database: {db:?}"));
    if sys.hosts_oracle() {
        // The oracle's host leaves last, so the others' leaves complete.
        let t = Instant::now();
        while g.view().is_some_and(|v| v.len() > 1) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Leavers install their last view from the oracle's next status: give it time to
        // reach them before this process (and the oracle with it) exits.
        std::thread::sleep(Duration::from_millis(500));
    }
    sys.shutdown()
}

#[allow(dead_code)]
fn main() {
    let label = std::env::args().nth(1).unwrap_or_else(|| "0".into());
    if let Err(e) = run(&label) {
        eprintln!("slides: {e}");
        std::process::exit(1);
    }
}
