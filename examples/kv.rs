//! A replicated key-value service: updates by OrderedSend (every replica applies them in the
//! same order), reads served locally, a rank-partitioned `COUNT` query, state transfer to
//! joiners, and a persistent checkpoint file so the store survives a total shutdown
//! (`Persistent` + a checkpoint every second + one at exit).
//!
//! Each process is one replica reading commands from stdin (or from `--script "a; b"`):
//!
//! ```text
//! put <key> <value>     OrderedSend PUT
//! del <key>             OrderedSend DEL
//! get <key>             local read
//! count                 Query ALL: each member counts the keys of its rank's share
//! dump                  the local store
//! view                  the current view
//! quit
//! ```
//!
//! ```text
//! cargo run -p vsync --example kv -- /tmp/kv.ckpt --script "put a 1; put b 2; dump; quit"
//! cargo run -p vsync --example kv -- /tmp/kv.ckpt --script "get a; count; quit"   # reloads
//! ```
//!
//! Run several at once (each hosts or finds the embedded oracle) and a joiner receives the
//! store by state transfer; after all have quit, the next one reloads the checkpoint.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vsync::marshal::{Encode, Marshal, Reader, Writer};
use vsync::{Group, NReplies, System, Timeout, VsyncError};

/// OrderedSend: set a key.
const PUT: u32 = 0;
/// OrderedSend: remove a key.
const DEL: u32 = 1;
/// Query: how many keys of this member's share (key hash % members == rank).
const COUNT: u32 = 2;
/// Query: the member's whole store (to compare replicas).
const DUMP: u32 = 3;

type Store = Arc<Mutex<BTreeMap<String, String>>>;

fn lock(s: &Store) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn share_of(key: &str, members: usize) -> usize {
    key.bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))) as usize
        % members.max(1)
}

fn main() -> Result<(), VsyncError> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "kv.ckpt".into());
    let script: Option<String> = match (args.next().as_deref(), args.next()) {
        (Some("--script"), Some(s)) => Some(s),
        _ => None,
    };
    let sys = System::start()?;
    let g = Group::new(&sys, "kv")?;
    let store: Store = Arc::default();

    let s = store.clone();
    g.on(PUT, move |k: String, v: String| {
        lock(&s).insert(k, v);
    })?;
    let s = store.clone();
    g.on(DEL, move |k: String| {
        lock(&s).remove(&k);
    })?;
    let (s, me) = (store.clone(), g.clone());
    g.on(COUNT, move || -> u64 {
        let v = me.view();
        let (rank, n) = v.map_or((0, 1), |v| (v.my_rank().unwrap_or(0), v.len()));
        lock(&s).keys().filter(|k| share_of(k, n) == rank).count() as u64
    })?;
    let s = store.clone();
    g.on(DUMP, move || -> BTreeMap<String, String> {
        lock(&s).clone()
    })?;
    // State transfer (and the persistent checkpoint): the whole map as one chunk.
    let s = store.clone();
    g.make_checkpoint(move || {
        let mut w = Writer::new();
        lock(&s).encode(&mut w);
        vec![w.into_vec()]
    })?;
    let s = store.clone();
    g.load_checkpoint(move |chunks| {
        for c in chunks {
            let mut r = Reader::new(&c);
            match BTreeMap::<String, String>::decode(&mut r) {
                Ok(m) => *lock(&s) = m,
                Err(e) => eprintln!("kv: bad checkpoint chunk: {e}"),
            }
        }
    })?;
    g.initializer(|| println!("kv: no replica and no checkpoint: starting empty"))?;
    g.on_view(|v| println!("kv: {v}"))?;
    g.persistent(&path)?;
    g.join()?;
    g.set_checkpoint_interval(Some(Duration::from_secs(1)))?;
    println!("kv: {} entries after join", lock(&store).len());

    let lines: Box<dyn Iterator<Item = String>> = match script {
        Some(s) => Box::new(
            s.split(';')
                .map(|l| l.trim().to_string())
                .collect::<Vec<_>>()
                .into_iter(),
        ),
        None => Box::new(std::io::stdin().lock().lines().map_while(Result::ok)),
    };
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let r = match words.as_slice() {
            ["put", k, v] => g.ordered_send(PUT, (k.to_string(), v.to_string())),
            ["del", k] => g.ordered_send(DEL, (k.to_string(),)),
            ["get", k] => {
                println!("{k} = {:?}", lock(&store).get(*k));
                Ok(())
            }
            ["count"] => g
                .query(NReplies::All, Timeout::default(), COUNT, ())
                .and_then(|r| Ok(r.decode::<u64>()?))
                .map(|counts| {
                    println!(
                        "count: {} keys ({counts:?} per member share)",
                        counts.iter().sum::<u64>()
                    )
                }),
            // A query is delivered after our earlier updates (FIFO), so every replica's
            // answer includes them.
            ["dump"] => g
                .query(NReplies::All, Timeout::default(), DUMP, ())
                .and_then(|r| Ok(r.decode::<BTreeMap<String, String>>()?))
                .map(|stores| {
                    let same = stores.windows(2).all(|w| w[0] == w[1]);
                    println!(
                        "{:?} ({} replicas, identical: {same})",
                        stores[0],
                        stores.len()
                    );
                }),
            ["view"] => {
                println!("{:?}", g.view());
                Ok(())
            }
            ["quit"] => break,
            [] => Ok(()),
            _ => {
                println!("commands: put K V | del K | get K | count | dump | view | quit");
                Ok(())
            }
        };
        if let Err(e) = r {
            println!("error: {e}");
        }
    }
    // A query after our last update returns once every replica has applied it.
    g.query(NReplies::All, Timeout::default(), COUNT, ())?;
    if g.checkpoint_now()? {
        println!("kv: checkpoint written to {path}");
    }
    sys.shutdown()
}
