//! Tests of SafeSend durability (`vsync::durability`) with real files in a unique temporary
//! directory: log / deliver / done and garbage collection in delivery order, asynchronous
//! completion, reopen after a crash, torn tails, corruption in the middle, I/O errors, and a
//! property test of random operation sequences against an in-memory model.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use vsync::durability::{
    CompletionTag, DiskLogger, Durability, DurabilityError, LoggedMsg, MemoryLogger,
};
use vsync::marshal::Address;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "vsync-durability-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tag(id: u64) -> CompletionTag {
    CompletionTag {
        sender: Address::new(3, 1),
        view: 7,
        msg_id: id,
    }
}

fn msg(id: u64) -> LoggedMsg {
    LoggedMsg {
        tag: tag(id),
        payload: format!("update number {id}").into_bytes(),
    }
}

fn tags(v: &[LoggedMsg]) -> Vec<u64> {
    v.iter().map(|m| m.tag.msg_id).collect()
}

const HEADER: u64 = 8;

#[test]
fn file_name_is_base_rank_dat() {
    let d = TempDir::new("name");
    let log = DiskLogger::open(d.path().join("mylog"), 2).unwrap();
    assert_eq!(log.path(), d.path().join("mylog2.dat"));
    assert!(d.path().join("mylog2.dat").exists());
    assert_eq!(log.file_len(), HEADER);
}

#[test]
fn gc_strictly_in_delivery_order() {
    let d = TempDir::new("gc");
    let mut log = DiskLogger::open(d.path().join("g"), 0).unwrap();
    log.set_gc_threshold(0);
    // Logged 1, 2, 3 but delivered in the order X=2, Y=3, Z=1.
    for id in [1, 2, 3] {
        assert_eq!(log.log(&msg(id)).unwrap(), tag(id));
    }
    for id in [2, 3, 1] {
        log.delivered(tag(id)).unwrap();
    }
    let before = log.file_len();
    log.done(tag(1)).unwrap(); // Z
    log.done(tag(3)).unwrap(); // Y
    assert_eq!(tags(&log.pending()), [2]);
    assert_eq!(log.live(), 3, "nothing collected before X is done");
    assert_eq!(log.dead_bytes(), 0);
    assert!(log.file_len() > before);
    log.done(tag(2)).unwrap(); // X
    assert_eq!(log.live(), 0);
    assert!(log.pending().is_empty());
    // Threshold 0: compacted at once down to the header.
    assert_eq!(log.file_len(), HEADER);
    assert_eq!(fs::metadata(log.path()).unwrap().len(), HEADER);
    assert!(!d.path().join("g0.dat.tmp").exists());
    drop(log);
    let log = DiskLogger::open(d.path().join("g"), 0).unwrap();
    assert_eq!(log.live(), 0);
    assert_eq!(log.recovery().torn_records, 0);
}

#[test]
fn gc_waits_for_threshold_then_compacts_live_suffix() {
    let d = TempDir::new("threshold");
    let mut log = DiskLogger::open(d.path().join("t"), 1).unwrap();
    log.set_gc_threshold(400);
    for id in 0..10 {
        log.log(&msg(id)).unwrap();
        log.delivered(tag(id)).unwrap();
    }
    log.log(&msg(100)).unwrap(); // logged, never delivered: stays live
    let mut compacted = false;
    for id in 0..9 {
        let len = log.file_len();
        log.done(tag(id)).unwrap();
        if log.file_len() < len {
            compacted = true;
            assert_eq!(log.dead_bytes(), 0);
        }
    }
    assert!(compacted);
    assert_eq!(tags(&log.pending()), [9, 100]);
    drop(log);
    let mut log = DiskLogger::open(d.path().join("t"), 1).unwrap();
    assert_eq!(tags(&log.pending()), [9, 100]);
    log.done(tag(9)).unwrap();
    assert_eq!(tags(&log.pending()), [100]);
    assert_eq!(log.live(), 1);
}

#[test]
fn async_completion() {
    let d = TempDir::new("async");
    let mut log = DiskLogger::open(d.path().join("a"), 0).unwrap();
    log.log(&msg(1)).unwrap();
    assert!(matches!(
        log.begin_async(tag(1)),
        Err(DurabilityError::NotDelivered(_))
    ));
    log.delivered(tag(1)).unwrap();
    assert!(!log.is_async(tag(1)));
    log.begin_async(tag(1)).unwrap();
    assert!(log.is_async(tag(1)));
    // The upcall returned; the update is still running: the message stays pending.
    assert_eq!(tags(&log.pending()), [1]);
    log.done(tag(1)).unwrap();
    assert!(log.pending().is_empty());
    assert!(!log.is_async(tag(1)));
}

#[test]
fn reopen_after_crash_replays_pending_with_same_tags() {
    let d = TempDir::new("crash");
    let base = d.path().join("c");
    {
        let mut log = DiskLogger::open(&base, 0).unwrap();
        for id in [10, 11, 12, 13] {
            log.log(&msg(id)).unwrap();
        }
        log.delivered(tag(10)).unwrap();
        log.delivered(tag(11)).unwrap();
        log.delivered(tag(12)).unwrap();
        log.done(tag(10)).unwrap();
        log.done(tag(12)).unwrap(); // done, but 11 (delivered before it) is not
        log.begin_async(tag(11)).unwrap();
        // Crash: dropped without any close.
    }
    let mut log = DiskLogger::open(&base, 0).unwrap();
    let p = log.pending();
    assert_eq!(p, vec![msg(11), msg(13)]);
    assert_eq!(log.live(), 3, "12 waits for 11");
    assert_eq!(log.recovery().torn_records, 0);
    assert!(log.recovery().records >= 9);
    // The replay delivers them again, in order, with the same tags.
    for m in &p {
        log.delivered(m.tag).unwrap();
        log.done(m.tag).unwrap();
    }
    assert_eq!(log.live(), 0);
    drop(log);
    assert!(DiskLogger::open(&base, 0).unwrap().pending().is_empty());
}

#[test]
fn torn_tail_is_truncated_and_counted() {
    let d = TempDir::new("torn");
    let base = d.path().join("t");
    let path;
    {
        let mut log = DiskLogger::open(&base, 0).unwrap();
        log.log(&msg(1)).unwrap();
        let len1 = log.file_len();
        log.log(&msg(2)).unwrap();
        path = log.path().to_path_buf();
        // Crash in the middle of appending record 2.
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len1 + 5).unwrap();
    }
    let mut log = DiskLogger::open(&base, 0).unwrap();
    assert_eq!(log.recovery().torn_records, 1);
    assert_eq!(log.recovery().torn_bytes, 5);
    assert_eq!(tags(&log.pending()), [1]);
    let len = log.file_len();
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
    // The log goes on normally after the truncation.
    log.log(&msg(3)).unwrap();
    drop(log);
    let log = DiskLogger::open(&base, 0).unwrap();
    assert_eq!(log.recovery().torn_records, 0);
    assert_eq!(tags(&log.pending()), [1, 3]);
}

#[test]
fn torn_last_record_with_bad_checksum_is_truncated() {
    let d = TempDir::new("torn2");
    let base = d.path().join("t");
    let path = {
        let mut log = DiskLogger::open(&base, 0).unwrap();
        log.log(&msg(1)).unwrap();
        log.log(&msg(2)).unwrap();
        log.path().to_path_buf()
    };
    // The file was extended but the last record's bytes never made it (zeros).
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 10..].fill(0);
    fs::write(&path, &bytes).unwrap();
    let log = DiskLogger::open(&base, 0).unwrap();
    assert_eq!(log.recovery().torn_records, 1);
    assert_eq!(tags(&log.pending()), [1]);
}

#[test]
fn torn_header_is_repaired() {
    let d = TempDir::new("hdr");
    let path = d.path().join("h0.dat");
    fs::write(&path, b"VSD").unwrap();
    let mut log = DiskLogger::open(d.path().join("h"), 0).unwrap();
    assert_eq!(log.recovery().torn_records, 1);
    log.log(&msg(1)).unwrap();
    drop(log);
    assert_eq!(
        tags(&DiskLogger::open(d.path().join("h"), 0).unwrap().pending()),
        [1]
    );
}

#[test]
fn corruption_in_the_middle_is_an_error() {
    let d = TempDir::new("corrupt");
    let base = d.path().join("x");
    let path = {
        let mut log = DiskLogger::open(&base, 0).unwrap();
        log.log(&msg(1)).unwrap();
        log.log(&msg(2)).unwrap();
        log.path().to_path_buf()
    };
    let mut bytes = fs::read(&path).unwrap();
    bytes[HEADER as usize + 30] ^= 0x40; // inside record 1's payload
    fs::write(&path, &bytes).unwrap();
    let e = DiskLogger::open(&base, 0).unwrap_err();
    match &e {
        DurabilityError::Corrupt {
            offset, path: p, ..
        } => {
            assert_eq!(*offset, HEADER);
            assert_eq!(p, &path);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("x0.dat") && text.contains("offset 8") && text.contains("checksum"));
    // The file is left as it was.
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn not_a_log_is_an_error() {
    let d = TempDir::new("magic");
    fs::write(d.path().join("m0.dat"), b"hello world, not a log").unwrap();
    assert!(matches!(
        DiskLogger::open(d.path().join("m"), 0),
        Err(DurabilityError::Corrupt { offset: 0, .. })
    ));
}

#[test]
fn io_errors_are_typed() {
    let d = TempDir::new("io");
    let e = DiskLogger::open(d.path().join("missing-dir").join("l"), 0).unwrap_err();
    assert!(matches!(e, DurabilityError::Io { op: "open", .. }), "{e:?}");
    assert!(e.to_string().starts_with("cannot open durability log"));
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn misuse_is_typed() {
    let d = TempDir::new("misuse");
    let mut disk = DiskLogger::open(d.path().join("u"), 0).unwrap();
    let mut mem = MemoryLogger::new();
    let loggers: [&mut dyn Durability; 2] = [&mut disk, &mut mem];
    for log in loggers {
        assert!(matches!(
            log.done(tag(1)),
            Err(DurabilityError::UnknownTag(_))
        ));
        assert!(matches!(
            log.delivered(tag(1)),
            Err(DurabilityError::UnknownTag(_))
        ));
        log.log(&msg(1)).unwrap();
        log.log(&msg(1)).unwrap(); // same payload: no-op
        let other = LoggedMsg {
            tag: tag(1),
            payload: b"different".to_vec(),
        };
        let e = log.log(&other).unwrap_err();
        assert_eq!(
            e.to_string(),
            "completion tag M3.1/v7/#1 is already logged with a different payload"
        );
        assert!(matches!(
            log.done(tag(1)),
            Err(DurabilityError::NotDelivered(_))
        ));
        log.delivered(tag(1)).unwrap();
        log.delivered(tag(1)).unwrap(); // replayed delivery: no-op
        log.log(&msg(2)).unwrap();
        log.delivered(tag(2)).unwrap();
        log.done(tag(2)).unwrap();
        assert!(matches!(
            log.done(tag(2)),
            Err(DurabilityError::AlreadyDone(_))
        ));
        assert!(matches!(
            log.begin_async(tag(2)),
            Err(DurabilityError::AlreadyDone(_))
        ));
        assert_eq!(log.pending(), vec![msg(1)]);
        log.done(tag(1)).unwrap();
        assert!(matches!(
            log.done(tag(1)),
            Err(DurabilityError::UnknownTag(_))
        ));
        assert!(log.pending().is_empty());
    }
    assert_eq!(disk.live(), 0);
}

// ---------------------------------------------------------------------------------------
// Random operation sequences against a model.

#[derive(Clone, Debug)]
enum Op {
    Log(u64, u8),
    Deliver(u64),
    Async(u64),
    Done(u64),
    Reopen,
    Compact,
}

#[derive(Clone, Debug)]
struct MEntry {
    id: u64,
    payload: u8,
    delivered: bool,
    done: bool,
    is_async: bool,
}

#[derive(Default)]
struct Model {
    live: Vec<MEntry>,
    delivery: Vec<u64>,
}

impl Model {
    fn find(&mut self, id: u64) -> Option<&mut MEntry> {
        self.live.iter_mut().find(|e| e.id == id)
    }

    fn completion(&mut self, id: u64) -> Result<&mut MEntry, &'static str> {
        match self.find(id) {
            None => Err("unknown"),
            Some(e) if !e.delivered => Err("not delivered"),
            Some(e) if e.done => Err("already done"),
            Some(e) => Ok(e),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), &'static str> {
        match *op {
            Op::Log(id, p) => match self.find(id) {
                Some(e) if e.payload == p => Ok(()),
                Some(_) => Err("duplicate"),
                None => {
                    self.live.push(MEntry {
                        id,
                        payload: p,
                        delivered: false,
                        done: false,
                        is_async: false,
                    });
                    Ok(())
                }
            },
            Op::Deliver(id) => match self.find(id) {
                None => Err("unknown"),
                Some(e) if e.delivered => Ok(()),
                Some(e) => {
                    e.delivered = true;
                    self.delivery.push(id);
                    Ok(())
                }
            },
            Op::Async(id) => {
                self.completion(id)?.is_async = true;
                Ok(())
            }
            Op::Done(id) => {
                self.completion(id)?.done = true;
                while let Some(&first) = self.delivery.first() {
                    if !self.find(first).unwrap().done {
                        break;
                    }
                    self.delivery.remove(0);
                    self.live.retain(|e| e.id != first);
                }
                Ok(())
            }
            Op::Reopen => {
                self.live.iter_mut().for_each(|e| e.is_async = false);
                Ok(())
            }
            Op::Compact => Ok(()),
        }
    }

    fn pending(&self) -> Vec<LoggedMsg> {
        self.live
            .iter()
            .filter(|e| !e.done)
            .map(|e| mk(e.id, e.payload))
            .collect()
    }
}

fn mk(id: u64, p: u8) -> LoggedMsg {
    LoggedMsg {
        tag: tag(id),
        payload: vec![p; 1 + (id as usize % 5) * 7],
    }
}

fn kind(e: &DurabilityError) -> &'static str {
    match e {
        DurabilityError::UnknownTag(_) => "unknown",
        DurabilityError::DuplicateTag(_) => "duplicate",
        DurabilityError::NotDelivered(_) => "not delivered",
        DurabilityError::AlreadyDone(_) => "already done",
        other => panic!("unexpected error {other}"),
    }
}

fn run(log: &mut dyn Durability, op: &Op) -> Result<(), &'static str> {
    match *op {
        Op::Log(id, p) => log.log(&mk(id, p)).map(|t| assert_eq!(t, tag(id))),
        Op::Deliver(id) => log.delivered(tag(id)),
        Op::Async(id) => log.begin_async(tag(id)),
        Op::Done(id) => log.done(tag(id)),
        Op::Reopen | Op::Compact => Ok(()),
    }
    .map_err(|e| kind(&e))
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u64..6;
    prop_oneof![
        3 => (id.clone(), 0u8..2).prop_map(|(i, p)| Op::Log(i, p)),
        3 => id.clone().prop_map(Op::Deliver),
        1 => id.clone().prop_map(Op::Async),
        3 => id.prop_map(Op::Done),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_ops_match_the_model(
        ops in prop::collection::vec(op(), 0..40),
        threshold in prop_oneof![Just(0u64), Just(150), Just(1 << 20)],
    ) {
        let d = TempDir::new("prop");
        let base = d.path().join("p");
        let mut disk = DiskLogger::open(&base, 0).unwrap();
        disk.set_gc_threshold(threshold);
        let mut mem = MemoryLogger::new();
        let mut model = Model::default();
        for op in &ops {
            let want = model.apply(op);
            match op {
                Op::Reopen => {
                    drop(disk);
                    disk = DiskLogger::open(&base, 0).unwrap();
                    disk.set_gc_threshold(threshold);
                    prop_assert_eq!(disk.recovery().torn_records, 0);
                }
                Op::Compact => disk.compact().unwrap(),
                _ => {}
            }
            prop_assert_eq!(run(&mut disk, op), want, "disk: {:?}", op);
            prop_assert_eq!(run(&mut mem, op), want, "memory: {:?}", op);
            let pending = model.pending();
            prop_assert_eq!(disk.pending(), pending.clone());
            prop_assert_eq!(mem.pending(), pending);
            prop_assert_eq!(disk.live(), model.live.len());
            prop_assert_eq!(mem.live(), model.live.len());
            for e in &model.live {
                prop_assert_eq!(disk.is_async(tag(e.id)), e.is_async);
            }
            prop_assert_eq!(fs::metadata(disk.path()).unwrap().len(), disk.file_len());
        }
        // A final crash and reopen gives back the same pending messages.
        drop(disk);
        let disk = DiskLogger::open(&base, 0).unwrap();
        prop_assert_eq!(disk.pending(), model.pending());
        prop_assert_eq!(disk.live(), model.live.len());
    }
}
