//! The parts of an [`Idem`](crate::Idem) handle that the call engine uses: its store, its snapshot
//! cache, this worker's name and the snapshot limit. The engine takes this, not the handle, so
//! the handle's module depends on the engine and never the other way round.

use std::sync::Arc;

use crate::cache::SnapshotCache;
use crate::store::Store;

pub(crate) struct Handle {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cache: Option<Arc<SnapshotCache>>,
    pub(crate) worker: String,
    pub(crate) max_snapshot_bytes: usize,
    /// Avoided costs not yet written to the store.
    pub(crate) ledger: crate::ledger::Ledger,
}
