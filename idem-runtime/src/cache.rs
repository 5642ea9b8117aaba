//! The process-local cache of completed snapshots: a replay that costs no round trip.
//!
//! A completed snapshot never changes until it expires or is forgotten, so caching it is safe
//! except for one case: a `forget` made by another process. An entry therefore lives for at
//! most `max_staleness` (default 30 s) and never past the record's own expiry; a `forget`
//! through this handle removes the entry at once.

use std::sync::Arc;
use std::time::Duration;

use crate::key::Key;
use crate::record::{now_millis, Millis, Snapshot};

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) snapshot: Snapshot,
    valid_until: Millis,
}

/// A bounded map from key to completed snapshot.
pub(crate) struct SnapshotCache {
    entries: quick_cache::sync::Cache<Key, Arc<Entry>>,
    max_staleness_ms: i64,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("len", &self.entries.len())
            .field("capacity", &self.entries.capacity())
            .field("max_staleness_ms", &self.max_staleness_ms)
            .finish()
    }
}

impl SnapshotCache {
    pub(crate) fn new(capacity: usize, max_staleness: Duration) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            max_staleness_ms: crate::store::millis(max_staleness),
        }
    }

    /// The cached snapshot of `key`, if it is still valid.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let entry = self.entries.get(key)?;
        if entry.valid_until > now_millis() {
            Some(entry)
        } else {
            self.entries.remove(key);
            None
        }
    }

    pub(crate) fn insert(&self, key: Key, snapshot: Snapshot) {
        let valid_until = snapshot
            .expires_at
            .min(now_millis().saturating_add(self.max_staleness_ms));
        self.entries.insert(
            key,
            Arc::new(Entry {
                snapshot,
                valid_until,
            }),
        );
    }

    pub(crate) fn remove(&self, key: &Key) {
        self.entries.remove(key);
    }
}
