//! `Durability::log_batch`: the SafeSend logger thread's group commit.

use vsync::durability::{
    CompletionTag, DiskLogger, Durability, DurabilityError, LoggedMsg, MemoryLogger,
};
use vsync::marshal::Address;

fn msg(id: u64, body: &[u8]) -> LoggedMsg {
    LoggedMsg {
        tag: CompletionTag {
            sender: Address::new(2, 1),
            view: 3,
            msg_id: id,
        },
        payload: body.to_vec(),
    }
}

#[test]
fn disk_batch_is_one_sync_and_survives_reopening() {
    let dir = std::env::temp_dir().join(format!("vsync-safe-batch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("g");
    let mut log = DiskLogger::open(&base, 0).unwrap();
    log.log(&msg(0, b"earlier")).unwrap();
    assert_eq!(log.syncs(), 1);
    let batch = vec![
        msg(1, b"a"),
        msg(2, b"b"),
        msg(1, b"a"),       // repeated in the batch: fine, logged once
        msg(2, b"other"),   // same tag, other payload: refused
        msg(0, b"earlier"), // already logged: a no-op
        msg(0, b"changed"), // already logged with another payload: refused
    ];
    let r = log.log_batch(&batch);
    assert_eq!(log.syncs(), 2, "one sync for the whole batch");
    assert!(r[0].is_ok() && r[1].is_ok() && r[2].is_ok() && r[4].is_ok());
    assert!(matches!(r[3], Err(DurabilityError::DuplicateTag(_))));
    assert!(matches!(r[5], Err(DurabilityError::DuplicateTag(_))));
    // Nothing new to write: no sync.
    let r = log.log_batch(&[msg(1, b"a")]);
    assert!(r[0].is_ok());
    assert_eq!(log.syncs(), 2);
    drop(log);
    let log = DiskLogger::open(&base, 0).unwrap();
    let pending: Vec<u64> = log.pending().iter().map(|m| m.tag.msg_id).collect();
    assert_eq!(pending, vec![0, 1, 2]);
    assert_eq!(log.recovery().torn_records, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn memory_batch_matches_single_logs() {
    let mut a = MemoryLogger::new();
    let mut b = MemoryLogger::new();
    let msgs: Vec<LoggedMsg> = (0..10).map(|i| msg(i, &[i as u8; 3])).collect();
    for r in a.log_batch(&msgs) {
        r.unwrap();
    }
    for m in &msgs {
        b.log(m).unwrap();
    }
    assert_eq!(a.pending(), b.pending());
    assert_eq!(a.live(), 10);
}
