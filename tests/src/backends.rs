//! Backends the conformance suite runs on: a store plus the handles the scenarios need.

use std::sync::Arc;

use idem_runtime::store::memory::MemoryStore;
use idem_runtime::store::sqlite::SqliteStore;
use idem_runtime::{Idem, Store};

/// One store under test. Scenarios open several handles on it to play several workers.
#[derive(Debug)]
pub struct Backend {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Keeps a temporary directory alive for file-backed stores.
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    /// Wraps a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, _dir: None }
    }

    /// A handle without the snapshot cache, so every call reaches the store.
    pub fn worker(&self, name: &str) -> Idem {
        Idem::builder(self.store.clone())
            .cache_capacity(0)
            .worker(name)
            .build()
    }

    /// A handle with the snapshot cache on.
    pub fn cached_worker(&self, name: &str) -> Idem {
        Idem::builder(self.store.clone()).worker(name).build()
    }
}

/// A fresh memory store.
pub async fn memory() -> Option<Backend> {
    Some(Backend::new(Arc::new(MemoryStore::new())))
}

/// A fresh SQLite file in a temporary directory.
pub async fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("idem.db").display());
    let store = SqliteStore::open(&url).await.expect("open sqlite");
    Some(Backend {
        store: Arc::new(store),
        _dir: Some(dir),
    })
}
