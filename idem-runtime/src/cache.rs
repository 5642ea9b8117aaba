//! The process-local cache of completed snapshots: a replay that costs no round trip.
//!
//! A completed snapshot never changes until it expires or is forgotten, so caching it is safe
//! except for one case: a `forget` made by another process. Three things bound that:
//! - a `forget` through this handle removes the entry at once;
//! - where the store pushes changes ([`crate::Store::watch`]; PostgreSQL's LISTEN/NOTIFY), a
//!   `forget` anywhere removes the entry when its notification arrives (milliseconds), and a
//!   claim that was in flight meanwhile does not cache what it read (the `epoch` check);
//! - whatever else happens (no push, the listener down), an entry lives for at most
//!   `max_staleness` (default 30 s), and never past the record's own expiry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::key::Key;
use crate::record::{now_millis, Millis, Snapshot};
use crate::store::StoredChunk;

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) snapshot: Snapshot,
    /// A streamed result's chunks, in order (`None` for a plain value).
    pub(crate) chunks: Option<Arc<[StoredChunk]>>,
    valid_until: Millis,
}

/// What an entry costs besides its snapshot bytes (key, entry, the map's own bookkeeping).
const ENTRY_OVERHEAD: u64 = 256;

/// What a cached chunk costs besides its bytes (its `Vec` and offset).
const CHUNK_OVERHEAD: u64 = 32;

/// An entry's weight against the cache's byte budget: its size, but at least the budget divided
/// by the entry limit, so the cache holds at most that many entries as well.
#[derive(Debug, Clone, Copy)]
struct Weight {
    min: u64,
}

impl quick_cache::Weighter<Key, Arc<Entry>> for Weight {
    fn weight(&self, _key: &Key, entry: &Arc<Entry>) -> u64 {
        let chunks = entry.chunks.as_deref().map_or(0, |chunks| {
            chunks
                .iter()
                .map(|c| c.bytes.len() as u64 + CHUNK_OVERHEAD)
                .sum()
        });
        (entry.snapshot.bytes.len() as u64 + chunks + ENTRY_OVERHEAD).max(self.min)
    }
}

/// A map from key to completed snapshot, bounded by entries and by bytes.
pub(crate) struct SnapshotCache {
    entries: quick_cache::sync::Cache<
        Key,
        Arc<Entry>,
        Weight,
        quick_cache::DefaultHashBuilder,
        quick_cache::sync::DefaultLifecycle<Key, Arc<Entry>>,
    >,
    max_staleness_ms: i64,
    /// Bumped by every pushed change: a snapshot read before a change may be stale.
    epoch: AtomicU64,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("len", &self.entries.len())
            .field("bytes", &self.entries.weight())
            .field("max_bytes", &self.entries.capacity())
            .field("max_staleness_ms", &self.max_staleness_ms)
            .finish()
    }
}

impl SnapshotCache {
    /// A cache of at most `max_entries` snapshots and `max_bytes` bytes (snapshot bytes plus a
    /// fixed overhead per entry); a snapshot larger than a quarter of the budget (one shard's
    /// share) is not cached.
    pub(crate) fn new(max_entries: usize, max_bytes: u64, max_staleness: Duration) -> Self {
        let max_entries = max_entries.max(1);
        let max_bytes = max_bytes.max(ENTRY_OVERHEAD);
        let weight = Weight {
            min: max_bytes / max_entries as u64,
        };
        // quick_cache splits the budget between shards and refuses an entry heavier than its
        // shard's share (by default 4 shards per core: about 1 MiB each on 16 cores with the
        // default budget). Four shards at most keep a quarter of the budget per shard, so the
        // default caches snapshots up to the default snapshot limit (16 MiB).
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(max_entries)
            .weight_capacity(max_bytes)
            .shards(4)
            .build();
        let entries = match options {
            Ok(options) => quick_cache::sync::Cache::with_options(
                options,
                weight,
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            Err(_) => quick_cache::sync::Cache::with_weighter(max_entries, max_bytes, weight),
        };
        Self {
            entries,
            max_staleness_ms: crate::store::millis(max_staleness),
            epoch: AtomicU64::new(0),
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

    /// The current epoch; pass it to [`Self::insert_read_at`] with a snapshot read after it.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches a snapshot read from the store after `epoch`, unless a change was pushed since
    /// (the change may have been to this key, after the read). Inserts first and checks after:
    /// a change pushed between a check and the insert would otherwise be missed (the listener
    /// bumps the epoch before it removes the key).
    pub(crate) fn insert_read_at(&self, epoch: u64, key: Key, snapshot: Snapshot) {
        if self.epoch() != epoch {
            return;
        }
        self.insert(key, snapshot, None);
        if self.epoch() != epoch {
            self.entries.remove(&key);
        }
    }

    /// [`Self::insert_read_at`] for a streamed result: its summary snapshot and its chunks.
    pub(crate) fn insert_stream_read_at(
        &self,
        epoch: u64,
        key: Key,
        snapshot: Snapshot,
        chunks: Arc<[StoredChunk]>,
    ) {
        if self.epoch() != epoch {
            return;
        }
        self.insert(key, snapshot, Some(chunks));
        if self.epoch() != epoch {
            self.entries.remove(&key);
        }
    }

    fn insert(&self, key: Key, snapshot: Snapshot, chunks: Option<Arc<[StoredChunk]>>) {
        let valid_until = snapshot
            .expires_at
            .min(now_millis().saturating_add(self.max_staleness_ms));
        self.entries.insert(
            key,
            Arc::new(Entry {
                snapshot,
                chunks,
                valid_until,
            }),
        );
    }

    pub(crate) fn remove(&self, key: &Key) {
        self.entries.remove(key);
    }

    /// The bytes its entries weigh now (for tests and `Debug`).
    #[cfg(test)]
    fn weight(&self) -> u64 {
        self.entries.weight()
    }
}

impl crate::store::ChangeSink for SnapshotCache {
    fn changed(&self, key: Option<&Key>) {
        // Bump first: a claim in flight that read the old snapshot then declines to cache it.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match key {
            Some(key) => self.remove(key),
            None => self.entries.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SnapshotKind;

    fn snapshot(len: usize) -> Snapshot {
        Snapshot {
            attempt: 1,
            kind: SnapshotKind::Ok,
            bytes: vec![b'x'; len],
            expires_at: i64::MAX,
            fingerprint: None,
            cost: None,
        }
    }

    #[test]
    fn bounded_by_bytes_as_well_as_entries() {
        let cache = SnapshotCache::new(1_000, 1 << 20, Duration::from_secs(60));
        for i in 0..64u8 {
            cache.insert_read_at(0, Key([i; 32]), snapshot(64 << 10));
        }
        assert!(cache.weight() <= 1 << 20, "{} bytes held", cache.weight());
        assert!(cache.entries.len() <= 16, "{} entries", cache.entries.len());
        // A snapshot of a fifth of the budget is cached, whatever the number of cores.
        cache.insert_read_at(0, Key([201; 32]), snapshot(200 << 10));
        assert!(cache.get(&Key([201; 32])).is_some());
        // One larger than the whole budget is not cached at all.
        cache.insert_read_at(0, Key([200; 32]), snapshot(2 << 20));
        assert!(cache.get(&Key([200; 32])).is_none());
    }

    #[test]
    fn bounded_by_entries_when_snapshots_are_small() {
        let cache = SnapshotCache::new(100, 64 << 20, Duration::from_secs(60));
        for i in 0..=255u8 {
            cache.insert_read_at(0, Key([i; 32]), snapshot(10));
        }
        assert!(
            cache.entries.len() <= 110,
            "{} entries",
            cache.entries.len()
        );
    }
}
