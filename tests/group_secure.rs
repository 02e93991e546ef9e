//! Secure groups: members with the same key communicate, a joiner with another key (or none)
//! is refused with an error naming the difference, a supplied key encrypts the persistent
//! checkpoint, and a random key is shared through the checkpoint's `.key` file.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vsync::checkpoint_file::{CheckpointError, CheckpointFile, FormatError};
use vsync::{Group, System, VsyncError};

mod common;
use common::{free_port, start, wait_30s as wait_until};

const NOTE: u32 = 0;

type Notes = Arc<Mutex<Vec<String>>>;

fn member(sys: &System, name: &str, key: Option<Option<[u8; 32]>>) -> (Group, Notes) {
    let g = Group::new(sys, name).unwrap();
    let notes: Notes = Arc::default();
    let n = notes.clone();
    g.on(NOTE, move |s: String| n.lock().unwrap().push(s))
        .unwrap();
    let n = notes.clone();
    g.make_checkpoint(move || vec![n.lock().unwrap().join("\n").into_bytes()])
        .unwrap();
    let n = notes.clone();
    g.load_checkpoint(move |c| {
        let text = String::from_utf8(c.concat()).unwrap();
        *n.lock().unwrap() = text.lines().map(str::to_string).collect();
    })
    .unwrap();
    if let Some(k) = key {
        g.set_secure(k).unwrap();
    }
    (g, notes)
}

#[test]
fn same_key_talks_other_keys_are_refused() {
    let port = free_port();
    let (sa, sb, sc) = (start(port), start(port), start(port));
    let key = [0x5au8; 32];
    let (ga, na) = member(&sa, "vault", Some(Some(key)));
    ga.join().unwrap();
    let (gb, nb) = member(&sb, "vault", Some(Some(key)));
    gb.join().unwrap();
    gb.ordered_send(NOTE, ("secret".to_string(),)).unwrap();
    wait_until("delivery at both", || {
        na.lock().unwrap().len() == 1 && nb.lock().unwrap().len() == 1
    });

    let (gc, _) = member(&sc, "vault", Some(Some([0x5b; 32])));
    match gc.join() {
        Err(VsyncError::Refused { reason, .. }) => {
            assert!(reason.contains("secure group (key check"), "{reason}")
        }
        other => panic!("a wrong key must be refused, got {other:?}"),
    }
    let (gd, _) = member(&sc, "vault", None);
    assert!(matches!(gd.join(), Err(VsyncError::Refused { .. })));
    sc.shutdown().unwrap();
    sb.shutdown().unwrap();
    sa.shutdown().unwrap();
}

#[test]
fn supplied_key_encrypts_the_checkpoint_and_random_key_is_shared_by_file() {
    let dir = std::env::temp_dir().join(format!("vsync-secure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vault.ckpt");
    let key = [0x11u8; 32];

    let port = free_port();
    let sa = start(port);
    let (ga, na) = member(&sa, "vault2", Some(Some(key)));
    ga.persistent(&file).unwrap();
    ga.join().unwrap();
    ga.ordered_send(NOTE, ("the launch code is 1234".to_string(),))
        .unwrap();
    wait_until("delivery", || na.lock().unwrap().len() == 1);
    assert!(ga.checkpoint_now().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        !bytes.windows(11).any(|w| w == b"launch code"),
        "checkpoint is encrypted"
    );
    assert!(matches!(
        CheckpointFile::new(&file).load(),
        Err(CheckpointError::Corrupt {
            what: FormatError::Encrypted,
            ..
        })
    ));
    assert!(matches!(
        CheckpointFile::new(&file).with_key([0x12; 32]).load(),
        Err(CheckpointError::Corrupt {
            what: FormatError::DecryptFailed,
            ..
        })
    ));
    sa.shutdown().unwrap();

    // A new incarnation with the key reloads the state.
    let port = free_port();
    let sb = start(port);
    let (gb, nb) = member(&sb, "vault2", Some(Some(key)));
    gb.persistent(&file).unwrap();
    gb.join().unwrap();
    assert_eq!(
        *nb.lock().unwrap(),
        vec!["the launch code is 1234".to_string()]
    );
    sb.shutdown().unwrap();

    // Random-key mode needs a persistent file, and members share the key through it.
    let port = free_port();
    let (sc, sd) = (start(port), start(port));
    let (gx, _) = member(&sc, "vault3", Some(None));
    assert!(matches!(gx.join(), Err(VsyncError::Config(_))));
    let shared = dir.join("vault3.ckpt");
    let (gc, nc) = member(&sc, "vault3", Some(None));
    gc.persistent(&shared).unwrap();
    gc.join().unwrap();
    let key_file = dir.join("vault3.ckpt.key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().len(), 32);
    let (gd, nd) = member(&sd, "vault3", Some(None));
    gd.persistent(&shared).unwrap();
    gd.join().unwrap();
    gd.ordered_send(NOTE, ("hello".to_string(),)).unwrap();
    wait_until("delivery at both", || {
        nc.lock().unwrap().len() == 1 && nd.lock().unwrap().len() == 1
    });
    sd.shutdown().unwrap();
    sc.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_system_key_authenticates_every_datagram() {
    let port = free_port();
    let key = [0x77u8; 32];
    let start = || {
        System::builder()
            .oracle_port(port)
            .system_key(Some(key))
            .join_timeout(Duration::from_secs(30))
            .start()
            .unwrap()
    };
    let (sa, sb) = (start(), start());
    let (ga, na) = member(&sa, "signed", None);
    ga.join().unwrap();
    let (gb, nb) = member(&sb, "signed", None);
    gb.join().unwrap();
    for i in 0..20 {
        gb.ordered_send(NOTE, (format!("n{i}"),)).unwrap();
    }
    wait_until("delivery at both", || {
        na.lock().unwrap().len() == 20 && nb.lock().unwrap().len() == 20
    });
    sb.shutdown().unwrap();
    sa.shutdown().unwrap();
}
