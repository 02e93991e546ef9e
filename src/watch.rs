//! Watches on group members (the manual's `myGroup.Watch[who] += ...` / `-= ...`): a
//! callback that runs, on the group's delivery thread and in order with the views, when a
//! later view shows the watched member joining or leaving.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::group::View;
use crate::marshal::Address;

/// What happened to a watched member (Isis² `W_JOIN` / `W_LEAVE`).
///
/// ```no_run
/// # use vsync::{Group, System, WatchEvent};
/// # let sys = System::start()?;
/// # let g = Group::new(&sys, "foo")?;
/// # let who = sys.my_address();
/// g.watch(who, |who, ev| {
///     if ev == (WatchEvent::Leave { failed: true }) {
///         println!("{who} crashed");
///     }
/// })?;
/// # Ok::<(), vsync::VsyncError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchEvent {
    /// The member joined the group (it is in the new view's `joined`).
    Join,
    /// The member left the group: gracefully (`failed == false`, in the view's `left`) or
    /// because it failed or was excluded (`failed == true`, in the view's `failed`).
    Leave {
        /// True when the member failed rather than leaving gracefully.
        failed: bool,
    },
}

/// Identifies a watch, for [`Group::cancel_watch`](crate::Group::cancel_watch).
///
/// ```no_run
/// # use std::collections::HashMap;
/// # use vsync::{Address, Group, System, WatchId};
/// # let sys = System::start()?;
/// # let g = Group::new(&sys, "foo")?;
/// let mut watches: HashMap<Address, WatchId> = HashMap::new();
/// let who = sys.my_address();
/// watches.insert(who, g.watch(who, |_, _| {})?);
/// if let Some(id) = watches.remove(&who) {
///     g.cancel_watch(id);
/// }
/// # Ok::<(), vsync::VsyncError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(u64);

type WatchFn = Arc<Mutex<Box<dyn FnMut(Address, WatchEvent) + Send>>>;

/// A group's watches.
#[derive(Default)]
pub(crate) struct Watches {
    next: u64,
    entries: BTreeMap<WatchId, (Address, WatchFn)>,
}

impl Watches {
    /// Adds a watch on `who`.
    pub(crate) fn add(
        &mut self,
        who: Address,
        f: Box<dyn FnMut(Address, WatchEvent) + Send>,
    ) -> WatchId {
        self.next += 1;
        let id = WatchId(self.next);
        self.entries.insert(id, (who, Arc::new(Mutex::new(f))));
        id
    }

    /// Removes a watch; false if it did not exist.
    pub(crate) fn cancel(&mut self, id: WatchId) -> bool {
        self.entries.remove(&id).is_some()
    }

    /// The callbacks a new view triggers, in watch order (called after the table's lock is
    /// released, so a callback may add or cancel watches).
    pub(crate) fn triggered(&self, view: &View) -> Vec<(Address, WatchEvent, WatchFn)> {
        let mut out = Vec::new();
        for (who, f) in self.entries.values() {
            let ev = if view.joined.contains(who) {
                WatchEvent::Join
            } else if view.left.contains(who) {
                WatchEvent::Leave { failed: false }
            } else if view.failed.contains(who) {
                WatchEvent::Leave { failed: true }
            } else {
                continue;
            };
            out.push((*who, ev, f.clone()));
        }
        out
    }
}

/// Runs the triggered callbacks; a panicking callback is contained.
pub(crate) fn run(triggered: Vec<(Address, WatchEvent, WatchFn)>) {
    for (who, ev, f) in triggered {
        let mut f = match f.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (*f)(who, ev)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(joined: Vec<Address>, left: Vec<Address>, failed: Vec<Address>) -> View {
        View {
            group: "g".into(),
            id: 2,
            members: joined.clone(),
            joined,
            left,
            failed,
            me: Address::new(9, 1),
        }
    }

    #[test]
    fn events_follow_the_view_delta_and_cancel_works() {
        let (a, b, c) = (Address::new(1, 1), Address::new(2, 1), Address::new(3, 1));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut w = Watches::default();
        let mut ids = Vec::new();
        for who in [a, b, c] {
            let s = seen.clone();
            ids.push(w.add(who, Box::new(move |x, ev| s.lock().unwrap().push((x, ev)))));
        }
        run(w.triggered(&view(vec![a], vec![b], vec![c])));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (a, WatchEvent::Join),
                (b, WatchEvent::Leave { failed: false }),
                (c, WatchEvent::Leave { failed: true })
            ]
        );
        assert!(w.cancel(ids[0]));
        assert!(!w.cancel(ids[0]));
        seen.lock().unwrap().clear();
        run(w.triggered(&view(vec![a], vec![], vec![])));
        assert!(seen.lock().unwrap().is_empty());
    }
}
