//! Hand-written baselines: the minimal SQL for the same work idem does, through the same driver.
//!
//! A miss is one claim insert plus one fenced completion update, each its own transaction; a
//! step is the same two statements in one transaction; a hit is one indexed read.
//! Idem's overhead is its own time divided by this, measured in the same run.

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

/// A baseline's answer to a hit: the stored snapshot.
pub type Snapshot = Vec<u8>;

/// What a baseline must do, per key.
#[allow(async_fn_in_trait)]
pub trait Baseline {
    /// Claim a fresh key and record its snapshot (two statements).
    async fn miss(&self, key: &[u8; 32], snapshot: &[u8]) -> Result<(), sqlx::Error>;
    /// The same two statements in one transaction (a transactional step).
    async fn step(&self, key: &[u8; 32], snapshot: &[u8]) -> Result<(), sqlx::Error>;
    /// Read a completed key's snapshot (one statement).
    async fn hit(&self, key: &[u8; 32]) -> Result<Option<Snapshot>, sqlx::Error>;
}
