//! Persistent groups and the group initializer (the manual's "Persistent Groups" and
//! "Initializing and Terminating a Group"), as run by a group's delivery thread.
//!
//! * A member that **creates** the group — its first view has no other member, so nobody can
//!   send it a state transfer — either loads the group's persistent checkpoint file (when
//!   [`Group::persistent`](crate::Group::persistent) names one and it holds a checkpoint),
//!   exactly as a joiner loads a state transfer, or runs the group's initializers
//!   ([`Group::initializer`](crate::Group::initializer)) and then writes the first checkpoint
//!   (the manual: the file is created "at the same point as it calls your group
//!   initialization method").
//! * Afterwards only the **rank-0** member writes the file: on
//!   [`Group::checkpoint_now`](crate::Group::checkpoint_now) (Isis² `MakeCheckpoint()`) and
//!   every [`Group::set_checkpoint_interval`](crate::Group::set_checkpoint_interval) period.
//!   The checkpoint is the state-transfer maker's chunks
//!   ([`Group::make_checkpoint`](crate::Group::make_checkpoint)), written by
//!   [`CheckpointFile::write`] (temporary file, fsync, atomic rename, previous kept as
//!   `.bak`), so it runs on the delivery thread, serialized with the handlers, and captures
//!   the state as of a point in the delivery order.
//! * A checkpoint file that cannot be read (corrupt, unreadable, too large) fails the join
//!   with [`VsyncError::Checkpoint`] naming the file; nothing is written, so `.bak` stays.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::checkpoint_file::CheckpointFile;
use crate::error::VsyncError;

/// A state-transfer maker (`MakeChkpt`).
pub(crate) type MakeFn = Box<dyn FnMut() -> Vec<Vec<u8>> + Send>;
/// A state-transfer loader (`LoadChkpt`).
pub(crate) type LoadFn = Box<dyn FnMut(Vec<Vec<u8>>) + Send>;
/// A group initializer.
pub(crate) type InitFn = Box<dyn FnMut() + Send>;

/// What a creating member did to get the group's initial state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// Loaded the persistent checkpoint.
    Loaded,
    /// Ran the initializers (no checkpoint existed, or the group is not persistent).
    Initialized,
}

/// The delivery thread's persistence state for one group.
pub(crate) struct Persistence {
    file: Option<CheckpointFile>,
    next_due: Option<Instant>,
}

impl Persistence {
    /// `file`: the group's checkpoint file, if it is persistent.
    pub(crate) fn new(file: Option<CheckpointFile>) -> Self {
        Persistence {
            file,
            next_due: None,
        }
    }

    /// At a member whose first view has no other member: load the checkpoint or initialize.
    pub(crate) fn on_create(
        &mut self,
        load: Option<&mut LoadFn>,
        make: Option<&mut MakeFn>,
        initializers: &mut [InitFn],
    ) -> Result<Start, VsyncError> {
        if let Some(file) = &self.file {
            let loaded = file
                .load()
                .map_err(|e| VsyncError::Checkpoint(e.to_string()))?;
            if let Some(chunks) = loaded {
                if let Some(f) = load {
                    catch_unwind(AssertUnwindSafe(|| f(chunks))).map_err(|_| {
                        VsyncError::Checkpoint(format!(
                            "{}: the checkpoint loader panicked",
                            file.path().display()
                        ))
                    })?;
                }
                return Ok(Start::Loaded);
            }
        }
        for f in initializers.iter_mut() {
            let _ = catch_unwind(AssertUnwindSafe(f));
        }
        if self.file.is_some() {
            self.write(make)?;
        }
        Ok(Start::Initialized)
    }

    /// Writes a checkpoint made by `make` now. `Ok(false)` when the group is not persistent.
    pub(crate) fn write(&mut self, make: Option<&mut MakeFn>) -> Result<bool, VsyncError> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let chunks = match make {
            Some(f) => catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
                VsyncError::Checkpoint(format!(
                    "{}: the checkpoint maker panicked",
                    file.path().display()
                ))
            })?,
            None => Vec::new(),
        };
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        file.write(&refs)
            .map_err(|e| VsyncError::Checkpoint(e.to_string()))?;
        Ok(true)
    }

    /// True for a persistent group.
    pub(crate) fn is_persistent(&self) -> bool {
        self.file.is_some()
    }

    /// How long the delivery thread may wait before the next periodic checkpoint is due
    /// (`None`: no periodic checkpoints). `interval` is the current setting.
    pub(crate) fn wait_budget(
        &mut self,
        interval: Option<Duration>,
        now: Instant,
    ) -> Option<Duration> {
        self.file.as_ref()?;
        match interval {
            None => {
                self.next_due = None;
                None
            }
            Some(iv) => {
                let due = *self.next_due.get_or_insert(now + iv);
                Some(due.saturating_duration_since(now))
            }
        }
    }

    /// The periodic checkpoint is due at `now`: returns true once per period (and schedules
    /// the next).
    pub(crate) fn take_due(&mut self, interval: Option<Duration>, now: Instant) -> bool {
        match (interval, self.next_due) {
            (Some(iv), Some(due)) if now >= due => {
                self.next_due = Some(now + iv);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vsync-persist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn create_initializes_then_writes_then_later_loads() {
        let d = dir("cycle");
        let path = d.join("g.ckpt");
        let state = Arc::new(Mutex::new(Vec::<u8>::new()));
        let inits = Arc::new(Mutex::new(0));
        let mk = |s: Arc<Mutex<Vec<u8>>>| -> MakeFn {
            Box::new(move || vec![s.lock().unwrap().clone()])
        };
        let ld = |s: Arc<Mutex<Vec<u8>>>| -> LoadFn {
            Box::new(move |c: Vec<Vec<u8>>| *s.lock().unwrap() = c.concat())
        };
        let i2 = inits.clone();
        let s2 = state.clone();
        let mut init: Vec<InitFn> = vec![Box::new(move || {
            *i2.lock().unwrap() += 1;
            *s2.lock().unwrap() = b"fresh".to_vec();
        })];
        let mut p = Persistence::new(Some(CheckpointFile::new(&path)));
        let (mut make, mut load) = (mk(state.clone()), ld(state.clone()));
        assert_eq!(
            p.on_create(Some(&mut load), Some(&mut make), &mut init)
                .unwrap(),
            Start::Initialized
        );
        assert_eq!(*inits.lock().unwrap(), 1);
        *state.lock().unwrap() = b"updated".to_vec();
        assert!(p.write(Some(&mut make)).unwrap());

        // A new incarnation of the group: loads, does not initialize.
        let fresh = Arc::new(Mutex::new(Vec::new()));
        let mut p = Persistence::new(Some(CheckpointFile::new(&path)));
        let (mut make, mut load) = (mk(fresh.clone()), ld(fresh.clone()));
        assert_eq!(
            p.on_create(Some(&mut load), Some(&mut make), &mut init)
                .unwrap(),
            Start::Loaded
        );
        assert_eq!(*fresh.lock().unwrap(), b"updated");
        assert_eq!(*inits.lock().unwrap(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_file_fails_and_keeps_the_backup() {
        let d = dir("corrupt");
        let path = d.join("g.ckpt");
        let f = CheckpointFile::new(&path);
        f.write(&[b"one"]).unwrap();
        f.write(&[b"two"]).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut p = Persistence::new(Some(CheckpointFile::new(&path)));
        let err = p.on_create(None, None, &mut []).unwrap_err();
        assert!(
            matches!(err, VsyncError::Checkpoint(ref m) if m.contains("g.ckpt")),
            "{err}"
        );
        assert_eq!(f.load_backup().unwrap(), Some(vec![b"one".to_vec()]));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn periodic_schedule() {
        let mut p = Persistence::new(Some(CheckpointFile::new("/nonexistent/x")));
        let t0 = Instant::now();
        let iv = Some(Duration::from_millis(100));
        assert_eq!(p.wait_budget(iv, t0), Some(Duration::from_millis(100)));
        assert!(!p.take_due(iv, t0 + Duration::from_millis(50)));
        assert!(p.take_due(iv, t0 + Duration::from_millis(100)));
        assert!(!p.take_due(iv, t0 + Duration::from_millis(150)));
        assert_eq!(p.wait_budget(None, t0), None);
        assert!(!p.take_due(None, t0 + Duration::from_secs(9)));
        let mut q = Persistence::new(None);
        assert_eq!(q.wait_budget(iv, t0), None);
    }
}
