//! The manual's first Query example ("Groups" section): every member answers a `LOOKUP` for
//! "John Smith" with its rank; the caller waits for ALL replies with a one-second timeout
//! that treats a silent member as failed (`Timeout(1000, TO_FAILURE)`).
//!
//! Run one or more copies; each waits until the group has `N` members (the argument,
//! default 1), queries, prints the replies, and stays a little longer to answer the others:
//!
//! ```text
//! cargo run -p vsync --example lookup -- 3 &
//! cargo run -p vsync --example lookup -- 3 &
//! cargo run -p vsync --example lookup -- 3
//! ```

use std::time::{Duration, Instant};

use vsync::{Group, NReplies, System, Timeout, TimeoutAction, VsyncError};

/// The request code.
const LOOKUP: u32 = 0;

fn main() -> Result<(), VsyncError> {
    let want: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let sys = System::start()?;
    // First create a group that includes just a single handler.
    let g = Group::new(&sys, "some name")?;
    let me = g.clone();
    g.on(LOOKUP, move |who: String| -> i32 {
        println!("My LOOKUP handler was asked to look up {who}");
        me.my_rank().unwrap_or(0) as i32
    })?;
    g.join()?;
    let t = Instant::now();
    while g.view().is_some_and(|v| v.len() < want) && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let timeout = Timeout::millis(1000, TimeoutAction::Failure);
    let replies = g.query(NReplies::All, timeout, LOOKUP, ("John Smith".to_string(),))?;
    let ranks: Vec<i32> = replies.decode()?;
    let reps: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
    println!(
        "Got {} replies and they are {}",
        ranks.len(),
        reps.join(" ")
    );
    // Stay long enough to answer the other members' queries.
    std::thread::sleep(Duration::from_secs(2));
    sys.shutdown()
}
