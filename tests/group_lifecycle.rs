//! Group lifecycle: the initializer, persistent groups across a total shutdown (oracle
//! included), a corrupt checkpoint file, periodic checkpoints, watches, HasFailed and
//! Terminate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vsync::checkpoint_file::CheckpointFile;
use vsync::{Address, Group, System, VsyncError, WatchEvent};

mod common;
use common::{free_port, start, wait_30s as wait_until};

const ADD: u32 = 0;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vsync-lifecycle-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

type Sum = Arc<Mutex<Vec<i64>>>;

/// A replicated list of i64 (ADD appends), persistent in `file`, counting initializer runs.
fn ledger(sys: &System, name: &str, file: &Path, inits: Arc<Mutex<u32>>) -> (Group, Sum) {
    let g = Group::new(sys, name).unwrap();
    let db: Sum = Arc::default();
    let d = db.clone();
    g.on(ADD, move |x: i64| d.lock().unwrap().push(x)).unwrap();
    let d = db.clone();
    g.make_checkpoint(move || {
        vec![d
            .lock()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect()]
    })
    .unwrap();
    let d = db.clone();
    g.load_checkpoint(move |chunks| {
        let mut v = d.lock().unwrap();
        v.clear();
        for c in chunks {
            v.extend(
                c.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap())),
            );
        }
    })
    .unwrap();
    let d = db.clone();
    g.initializer(move || {
        *inits.lock().unwrap() += 1;
        d.lock().unwrap().push(-1); // the initial state
    })
    .unwrap();
    g.persistent(file).unwrap();
    (g, db)
}

#[test]
fn persistent_group_survives_a_total_shutdown() {
    let dir = temp_dir("persist");
    let file = dir.join("ledger.ckpt");
    let inits = Arc::new(Mutex::new(0));

    // First incarnation: A creates (initializer runs, first checkpoint written), B joins by
    // state transfer (no initializer there).
    let port = free_port();
    let (sa, sb) = (start(port), start(port));
    let (ga, dba) = ledger(&sa, "ledger", &file, inits.clone());
    ga.join().unwrap();
    assert_eq!(*inits.lock().unwrap(), 1);
    assert_eq!(*dba.lock().unwrap(), vec![-1]);
    assert_eq!(
        CheckpointFile::new(&file).load().unwrap(),
        Some(vec![(-1i64).to_le_bytes().to_vec()]),
        "the file is created when the group is first created"
    );
    let (gb, dbb) = ledger(&sb, "ledger", &file, inits.clone());
    gb.join().unwrap();
    assert_eq!(
        *inits.lock().unwrap(),
        1,
        "a joiner gets state, not the initializer"
    );
    for x in 1..=5i64 {
        gb.ordered_send(ADD, (x,)).unwrap();
    }
    wait_until("both replicas have 6 entries", || {
        dba.lock().unwrap().len() == 6 && dbb.lock().unwrap().len() == 6
    });
    assert!(!gb.checkpoint_now().unwrap(), "only rank 0 writes");
    assert!(ga.checkpoint_now().unwrap(), "rank 0 writes");
    // One more update after the checkpoint: lost by the total shutdown, as the manual says.
    ga.ordered_send(ADD, (99i64,)).unwrap();
    wait_until("the update", || dba.lock().unwrap().len() == 7);
    sb.shutdown().unwrap();
    sa.shutdown().unwrap();

    // Second incarnation, new oracle (nothing of the old group survives but the file): the
    // creator loads the checkpoint, the initializer does not run.
    let port = free_port();
    let sc = start(port);
    let (gc, dbc) = ledger(&sc, "ledger", &file, inits.clone());
    gc.join().unwrap();
    assert_eq!(*dbc.lock().unwrap(), vec![-1, 1, 2, 3, 4, 5]);
    assert_eq!(*inits.lock().unwrap(), 1);
    // The previous checkpoint is kept as .bak.
    assert_eq!(
        CheckpointFile::new(&file).load_backup().unwrap(),
        Some(vec![(-1i64).to_le_bytes().to_vec()])
    );

    // Periodic checkpoints at rank 0.
    gc.ordered_send(ADD, (6i64,)).unwrap();
    wait_until("the update", || dbc.lock().unwrap().len() == 7);
    gc.set_checkpoint_interval(Some(Duration::from_millis(50)))
        .unwrap();
    wait_until("a periodic checkpoint", || {
        CheckpointFile::new(&file)
            .load()
            .ok()
            .flatten()
            .is_some_and(|c| c[0].len() == 7 * 8)
    });
    gc.set_checkpoint_interval(None).unwrap();
    assert!(matches!(
        gc.set_checkpoint_interval(Some(Duration::ZERO)),
        Err(VsyncError::Config(_))
    ));
    sc.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_checkpoint_fails_the_join_and_keeps_the_backup() {
    let dir = temp_dir("corrupt");
    let file = dir.join("ledger.ckpt");
    let ckpt = CheckpointFile::new(&file);
    ckpt.write(&[&7i64.to_le_bytes()]).unwrap();
    ckpt.write(&[&8i64.to_le_bytes()]).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[20] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();

    let port = free_port();
    let sa = start(port);
    let inits = Arc::new(Mutex::new(0));
    let (ga, _db) = ledger(&sa, "ledger2", &file, inits.clone());
    let err = ga.join().unwrap_err();
    assert!(
        matches!(&err, VsyncError::Checkpoint(m) if m.contains("ledger.ckpt")),
        "{err}"
    );
    assert_eq!(*inits.lock().unwrap(), 0);
    assert!(!ga.is_joined());
    assert_eq!(
        ckpt.load_backup().unwrap(),
        Some(vec![7i64.to_le_bytes().to_vec()]),
        ".bak untouched"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "the bad file is not overwritten"
    );

    // Persistent without a maker and loader is a configuration error.
    let g = Group::new(&sa, "ledger3").unwrap();
    g.persistent(dir.join("x.ckpt")).unwrap();
    assert!(matches!(g.join(), Err(VsyncError::Config(_))));
    sa.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

fn plain(sys: &System, name: &str) -> Group {
    let g = Group::new(sys, name).unwrap();
    g.on(ADD, |_x: i64| {}).unwrap();
    g
}

#[test]
fn watches_see_joins_and_leaves_and_can_be_cancelled() {
    let port = free_port();
    let (sa, sb, sc) = (start(port), start(port), start(port));
    let ga = plain(&sa, "watched");
    ga.join().unwrap();
    let events: Arc<Mutex<Vec<(Address, WatchEvent)>>> = Arc::default();
    let (b, c) = (sb.my_address(), sc.my_address());
    let e = events.clone();
    ga.watch(b, move |who, ev| e.lock().unwrap().push((who, ev)))
        .unwrap();
    let e = events.clone();
    let wc = ga
        .watch(c, move |who, ev| e.lock().unwrap().push((who, ev)))
        .unwrap();
    let gb = plain(&sb, "watched");
    gb.join().unwrap();
    wait_until("the join event", || events.lock().unwrap().len() == 1);
    assert!(ga.cancel_watch(wc));
    let gc = plain(&sc, "watched");
    gc.join().unwrap();
    wait_until("view 3 at A", || ga.view().is_some_and(|v| v.len() == 3));
    gc.leave().unwrap();
    gb.leave().unwrap();
    wait_until("B's leave event", || events.lock().unwrap().len() == 2);
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            (b, WatchEvent::Join),
            (b, WatchEvent::Leave { failed: false })
        ],
        "C's watch was cancelled"
    );
    sc.shutdown().unwrap();
    sb.shutdown().unwrap();
    sa.shutdown().unwrap();
}

#[test]
fn has_failed_excludes_and_poisons_the_member() {
    let port = free_port();
    let (sa, sb) = (start(port), start(port));
    let ga = plain(&sa, "suspects");
    ga.join().unwrap();
    let gb = plain(&sb, "suspects");
    gb.join().unwrap();
    wait_until("view 2 at A", || ga.view().is_some_and(|v| v.len() == 2));
    let b = sb.my_address();
    let failed = Arc::new(Mutex::new(None));
    let f = failed.clone();
    ga.watch(b, move |_, ev| *f.lock().unwrap() = Some(ev))
        .unwrap();
    assert!(matches!(
        ga.has_failed(Address::new(12345, 1)),
        Err(VsyncError::NotMember { .. })
    ));
    ga.has_failed(b).unwrap();
    wait_until("B excluded at A", || {
        ga.view()
            .is_some_and(|v| v.len() == 1 && v.failed == vec![b])
    });
    assert_eq!(
        *failed.lock().unwrap(),
        Some(WatchEvent::Leave { failed: true })
    );
    wait_until("B poisoned", || {
        matches!(gb.send(ADD, (1i64,)), Err(VsyncError::Poisoned(_)))
    });
    sa.shutdown().unwrap();
    let _ = sb.shutdown();
}

#[test]
fn terminate_ends_the_group_everywhere() {
    let port = free_port();
    let (sa, sb) = (start(port), start(port));
    let ga = plain(&sa, "doomed");
    ga.join().unwrap();
    let gb = plain(&sb, "doomed");
    gb.join().unwrap();
    wait_until("view 2 at A", || ga.view().is_some_and(|v| v.len() == 2));
    gb.terminate().unwrap();
    assert!(!gb.is_joined());
    wait_until("A sees the end", || !ga.is_joined());
    assert!(matches!(
        ga.send(ADD, (1i64,)),
        Err(VsyncError::NotJoined { .. })
    ));
    // The name can be created again.
    let again = plain(&sa, "doomed");
    again.join().unwrap();
    assert_eq!(again.view().unwrap().len(), 1);
    sb.shutdown().unwrap();
    sa.shutdown().unwrap();
}
