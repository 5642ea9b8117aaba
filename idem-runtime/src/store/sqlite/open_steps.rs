//! The steps this process has open on a SQLite store, so its other claims of their keys learn
//! at once that an attempt is under way instead of waiting for the write lock the step holds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::key::Key;
use crate::store::Claim;

/// The keys of the steps this process has open on one store (SQLite's), so its other claims of
/// those keys learn at once that an attempt is under way, instead of waiting for the write lock
/// the step holds. Empty almost always: a claim reads one atomic.
#[derive(Debug, Default)]
pub(crate) struct OpenSteps {
    any: AtomicBool,
    keys: Mutex<HashSet<Key>>,
}

impl OpenSteps {
    /// Whether a step of this process is open (on this store).
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Whether a step of this process has `key` open.
    pub(crate) fn holds(&self, key: &Key) -> bool {
        self.any.load(Ordering::Acquire) && self.keys.lock().is_ok_and(|keys| keys.contains(key))
    }

    /// Marks `key` open until the guard drops, or `None` when a step of this process has it
    /// open already.
    pub(crate) fn enter(self: &Arc<Self>, key: &Key) -> Option<OpenStep> {
        // A poisoned lock (a panic while holding it cannot happen: nothing in here panics)
        // would only stop this shortcut: the claim then waits for the write lock as before.
        let mut keys = self.keys.lock().ok()?;
        if !keys.insert(*key) {
            return None;
        }
        self.any.store(true, Ordering::Release);
        Some(OpenStep {
            steps: self.clone(),
            key: *key,
        })
    }
}

/// A step's mark in [`OpenSteps`], removed when the step commits, rolls back or is dropped.
#[derive(Debug)]
pub(crate) struct OpenStep {
    steps: Arc<OpenSteps>,
    key: Key,
}

impl Drop for OpenStep {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.steps.keys.lock() {
            keys.remove(&self.key);
            if keys.is_empty() {
                self.steps.any.store(false, Ordering::Release);
            }
        }
    }
}

/// What a claim reports when an uncommitted attempt holds the key (a transactional step's):
/// running, attempt 0 (its number is not visible outside its transaction), with a whole lease
/// left (the caller's `wait` bounds the wait).
pub(crate) fn uncommitted_attempt(lease: Duration) -> Claim {
    Claim::Running {
        attempt: 0,
        lease_left: lease,
    }
}
