//! Field names, shared instead of allocated per event.
//!
//! A tenant's events carry the same few dozen field names over and over (`Event.System.EventID`
//! in every Windows event), and each one was its own heap allocation: allocated when an event
//! was decoded and freed when it was dropped, usually on another thread. The names of flat
//! field sets read from the bus are now kept once per process, in a bounded table that is
//! never freed, and an event holds a `&'static str` to them. A name the table has no room for
//! (it is full, or the name is long) is owned by its event as before, so a source that invents
//! names without end costs memory only up to the bound, and never changes a field's name or
//! value. Names built anywhere else (ingest's parsing of untrusted bodies, nested objects) are
//! always owned: only events already accepted by ingest reach the table.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

use rustc_hash::FxHashSet;

/// At most this many names are kept for the life of the process.
const MAX_NAMES: usize = 16_384;
/// Longer names are never kept: no real source uses them, and they would eat the table.
const MAX_NAME_BYTES: usize = 128;
/// A thread's copy of the table is emptied when it reaches this many names.
const MAX_LOCAL_NAMES: usize = 1_024;

/// Set once the table is full: from then on a name this thread has no copy of is owned without
/// taking the lock (even one the table holds, if the thread's copy was emptied since).
static FULL: AtomicBool = AtomicBool::new(false);

/// Names kept so far, shared by all threads.
static SHARED: LazyLock<Mutex<FxHashSet<&'static str>>> =
    LazyLock::new(|| Mutex::new(FxHashSet::default()));

thread_local! {
    /// The names this thread has met: found without taking the shared table's lock.
    static LOCAL: RefCell<FxHashSet<&'static str>> = RefCell::new(FxHashSet::default());
}

/// The kept copy of `name`, if it is kept or there is room to keep it.
fn shared(name: &str) -> Option<&'static str> {
    if name.len() > MAX_NAME_BYTES {
        return None;
    }
    LOCAL.with(|local| {
        if let Some(&kept) = local.borrow().get(name) {
            return Some(kept);
        }
        if FULL.load(Ordering::Relaxed) {
            return None;
        }
        // A poisoned lock still holds a valid set: names are only ever added.
        let Some(kept) = keep(
            &mut SHARED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            name,
            MAX_NAMES,
        ) else {
            FULL.store(true, Ordering::Relaxed);
            return None;
        };
        let mut local = local.borrow_mut();
        if local.len() >= MAX_LOCAL_NAMES {
            local.clear();
        }
        local.insert(kept);
        Some(kept)
    })
}

/// `name`'s copy in `names`, added if there are fewer than `limit`.
fn keep(names: &mut FxHashSet<&'static str>, name: &str, limit: usize) -> Option<&'static str> {
    if let Some(&kept) = names.get(name) {
        return Some(kept);
    }
    if names.len() >= limit {
        return None;
    }
    let kept: &'static str = Box::leak(name.into());
    names.insert(kept);
    Some(kept)
}

/// A field's dotted name: the process's shared copy, or the event's own when it has none.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key(Cow<'static, str>);

impl Key {
    /// The key for `name`, the table's copy when it has or can take one.
    pub(crate) fn shared(name: &str) -> Self {
        match shared(name) {
            Some(kept) => Key(Cow::Borrowed(kept)),
            None => Self::owned(name),
        }
    }

    /// The key for `name`, owned by its event.
    pub(crate) fn owned(name: &str) -> Self {
        Key(Cow::Owned(name.to_owned()))
    }

    /// As [`Key::owned`], reusing `name`'s allocation.
    pub(crate) fn from_string(name: String) -> Self {
        Key(Cow::Owned(name))
    }

    /// As [`Key::from_string`].
    pub(crate) fn from_boxed(name: Box<str>) -> Self {
        Self::from_string(name.into_string())
    }

    /// A name already kept.
    pub(crate) fn kept(name: &'static str) -> Self {
        Key(Cow::Borrowed(name))
    }

    /// The kept copy this key is, if it is one.
    pub(crate) fn as_kept(&self) -> Option<&'static str> {
        match self.0 {
            Cow::Borrowed(kept) => Some(kept),
            Cow::Owned(_) => None,
        }
    }
}

impl std::ops::Deref for Key {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Key {
    #[inline]
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_met_twice_is_one_shared_copy() {
        let (a, b) = (
            Key::shared("Event.System.EventID"),
            Key::shared("Event.System.EventID"),
        );
        let same = |x: &Key, y: &Key| matches!((x.as_kept(), y.as_kept()), (Some(x), Some(y)) if std::ptr::eq(x, y));
        assert!(same(&a, &b));
        // Another thread finds the same copy through the shared table.
        let there = std::thread::spawn(|| Key::shared("Event.System.EventID"))
            .join()
            .unwrap();
        assert!(same(&a, &there));
        // Keys compare by their text, shared or not.
        assert_eq!(a, Key::owned("Event.System.EventID"));
    }

    #[test]
    fn a_full_table_keeps_what_it_has_and_adds_nothing() {
        let mut names = FxHashSet::default();
        assert!(keep(&mut names, "a", 2).is_some());
        assert!(keep(&mut names, "b", 2).is_some());
        assert_eq!(keep(&mut names, "c", 2), None);
        assert_eq!(keep(&mut names, "a", 2), Some("a"));
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn a_long_name_is_owned_by_its_event() {
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let key = Key::shared(&long);
        assert_eq!(key.as_kept(), None);
        assert_eq!(&*key, long);
        assert_eq!(key, Key::from_string(long.clone()));
    }
}
