//! The key cache: one shard per core, plus the node-wide invalidation log that lets a delete
//! on one core evict the key on every core before the delete answers.
//!
//! A hit touches only the core's own shard and one relaxed-cost atomic load (the invalidation
//! epoch, a cache line that is written only by deletes). No lock, no message, no other core.

pub mod flight;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crypto::KeyRing;

/// How many invalidations the log remembers; a shard that falls further behind flushes itself.
pub const INVALIDATION_LOG_LEN_MAX: usize = 1024;

/// Node-wide record of deleted key names, ordered by epoch.
#[derive(Default)]
pub struct Invalidations {
    epoch: AtomicU64,
    log: Mutex<VecDeque<(u64, Box<str>)>>,
}

impl Invalidations {
    /// Records that `name` was deleted. After this returns, every shard's next lookup misses
    /// for `name`.
    pub fn publish(&self, name: &str) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = self.epoch.load(Ordering::Relaxed) + 1;
        log.push_back((epoch, name.into()));
        while log.len() > INVALIDATION_LOG_LEN_MAX {
            log.pop_front();
        }
        self.epoch.store(epoch, Ordering::Release);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Calls `evict` for every name deleted after `seen`; returns the new epoch, or `None` if
    /// the log no longer reaches back to `seen` (the caller must flush everything).
    fn since(&self, seen: u64, mut evict: impl FnMut(&str)) -> (u64, bool) {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.epoch.load(Ordering::Relaxed);
        let complete = match log.front() {
            Some(&(oldest, _)) => oldest <= seen + 1,
            None => now == seen,
        };
        if complete {
            for (_, name) in log.iter().filter(|(e, _)| *e > seen) {
                evict(name);
            }
        }
        (now, complete)
    }

    /// True if `name` was deleted after epoch `seen` (or the log cannot tell).
    pub fn deleted_since(&self, seen: u64, name: &str) -> bool {
        if self.epoch() == seen {
            return false;
        }
        let mut hit = false;
        let (_, complete) = self.since(seen, |n| hit |= n == name);
        hit || !complete
    }
}

struct Entry {
    key: Rc<KeyRing>,
    used: bool,
    inserted: Instant,
    /// Read again for a version the previous copy did not have (see `api::store::reload`).
    reloaded: bool,
}

/// Expiry settings (`cache.expiry.*`); zero disables that eviction.
#[derive(Clone, Copy, Debug)]
pub struct Expiry {
    pub any: Duration,
    pub unused: Duration,
}

impl Default for Expiry {
    /// The documented defaults (storage-and-config.md §5.4), not the reference's typo.
    fn default() -> Self {
        Expiry {
            any: Duration::from_secs(300),
            unused: Duration::from_secs(30),
        }
    }
}

/// One core's cache shard. Lives in a `RefCell` owned by the core; never borrowed across an
/// `.await`.
#[derive(Default)]
pub struct Shard {
    entries: HashMap<Box<str>, Entry>,
    seen_epoch: u64,
}

impl Shard {
    /// Applies deletions published since the last call.
    pub fn sync(&mut self, invalidations: &Invalidations) {
        if invalidations.epoch() == self.seen_epoch {
            return;
        }
        let entries = &mut self.entries;
        let (epoch, complete) = invalidations.since(self.seen_epoch, |name| {
            entries.remove(name);
        });
        if !complete {
            self.entries.clear();
        }
        self.seen_epoch = epoch;
    }

    /// The cached key, marking it used.
    pub fn get(&mut self, invalidations: &Invalidations, name: &str) -> Option<Rc<KeyRing>> {
        self.sync(invalidations);
        let entry = self.entries.get_mut(name)?;
        entry.used = true;
        Some(entry.key.clone())
    }

    /// Inserts a key fetched from the keystore, unless it was deleted after `fetch_epoch`
    /// (the epoch read before the fetch started), which would resurrect it.
    pub fn insert(
        &mut self,
        invalidations: &Invalidations,
        fetch_epoch: u64,
        name: &str,
        key: Rc<KeyRing>,
        reloaded: bool,
    ) {
        self.sync(invalidations);
        if invalidations.deleted_since(fetch_epoch, name) {
            return;
        }
        self.entries.insert(
            name.into(),
            Entry {
                key,
                used: true,
                inserted: Instant::now(),
                reloaded,
            },
        );
    }

    /// How long ago the cached ring of `name` was read again for a version it lacked;
    /// `None` if it was not (or is not cached).
    pub fn reloaded_ago(&self, name: &str, now: Instant) -> Option<Duration> {
        self.entries
            .get(name)
            .filter(|e| e.reloaded)
            .map(|e| now.saturating_duration_since(e.inserted))
    }

    pub fn remove(&mut self, name: &str) {
        self.entries.remove(name);
    }

    /// Drops every entry (offline expiry).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops entries older than `expiry.any`, and entries not used since the previous sweep
    /// when `unused` is set; clears the used flags. Run every `unused / 2` (or `any`).
    pub fn sweep(&mut self, expiry: Expiry, now: Instant) {
        self.entries.retain(|_, e| {
            let fresh = expiry.any.is_zero() || now.duration_since(e.inserted) < expiry.any;
            let used = expiry.unused.is_zero() || e.used;
            e.used = false;
            fresh && used
        });
    }
}

/// The sweep period for `expiry`: `unused / 2` if set, else `any`, else none.
pub fn sweep_period(expiry: Expiry) -> Option<Duration> {
    let period = if !expiry.unused.is_zero() {
        expiry.unused / 2
    } else {
        expiry.any
    };
    (!period.is_zero()).then_some(period)
}

/// Per-core cache handle.
pub type CoreCache = RefCell<Shard>;
