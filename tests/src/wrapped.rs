//! A store wrapper for tests: every operation goes to the wrapped store, with at most three
//! behaviours switched on, each pinning down one window of the life of a call:
//! - `unwatched`: the store's change feed is hidden, so a snapshot cache hears of nothing done
//!   by other handles (what SQLite, or a PostgreSQL store whose listener is down, gives);
//! - `complete_delay`: every completion first sleeps, the window in which a call can be dropped
//!   after its body returned and before its outcome is written;
//! - `pause_next_claim`: once armed, the next claim pauses after the store decided it, until
//!   resumed (a claim in flight, to race a forget against).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use idem_runtime::record::{AttemptLog, Record};
use idem_runtime::store::{
    AttemptRef, AvoidedCost, ChangeSink, Claim, ClaimRequest, CostLine, Fence, ListFilter,
    OpCounts, Outcome, Store, StoredChunk,
};
use idem_runtime::{Error, Key};
use tokio::sync::Notify;

/// See the module docs.
#[derive(Debug)]
pub struct Wrapped {
    inner: Arc<dyn Store>,
    unwatched: bool,
    complete_delay: Duration,
    /// Pause the next claim after the store decided it.
    pub pause_next_claim: AtomicBool,
    /// Notified when a paused claim has been decided.
    pub claim_decided: Notify,
    /// Notify to let a paused claim return.
    pub claim_resume: Notify,
}

impl Wrapped {
    fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            unwatched: false,
            complete_delay: Duration::ZERO,
            pause_next_claim: AtomicBool::new(false),
            claim_decided: Notify::new(),
            claim_resume: Notify::new(),
        }
    }

    /// `inner` with its change feed hidden.
    pub fn unwatched(inner: Arc<dyn Store>) -> Self {
        Self {
            unwatched: true,
            ..Self::new(inner)
        }
    }

    /// `inner` whose completions each sleep `delay` first.
    pub fn slow_complete(inner: Arc<dyn Store>, delay: Duration) -> Self {
        Self {
            complete_delay: delay,
            ..Self::new(inner)
        }
    }

    /// `inner` with its change feed hidden and its next claim paused (see the module docs).
    pub fn pausing_next_claim(inner: Arc<dyn Store>) -> Self {
        Self {
            pause_next_claim: AtomicBool::new(true),
            ..Self::unwatched(inner)
        }
    }
}

#[async_trait]
impl Store for Wrapped {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let claim = self.inner.claim(req).await;
        if self.pause_next_claim.swap(false, Ordering::SeqCst) {
            self.claim_decided.notify_one();
            self.claim_resume.notified().await;
        }
        claim
    }
    async fn renew(&self, attempt: &AttemptRef<'_>, lease: Duration) -> Result<Fence, Error> {
        self.inner.renew(attempt, lease).await
    }
    async fn complete(
        &self,
        attempt: &AttemptRef<'_>,
        outcome: Outcome<'_>,
    ) -> Result<Fence, Error> {
        if !self.complete_delay.is_zero() {
            tokio::time::sleep(self.complete_delay).await;
        }
        self.inner.complete(attempt, outcome).await
    }
    async fn wait_for_change(&self, key: &Key, max: Duration) {
        self.inner.wait_for_change(key, max).await;
    }
    fn wakes_waiters(&self) -> bool {
        !self.unwatched && self.inner.wakes_waiters()
    }
    fn watch(&self, sink: Weak<dyn ChangeSink>) -> bool {
        !self.unwatched && self.inner.watch(sink)
    }
    fn sql_store(&self) -> Option<idem_runtime::store::SqlStore<'_>> {
        self.inner.sql_store()
    }
    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        self.inner.get(key).await
    }
    async fn attempts(&self, key: &Key) -> Result<Vec<AttemptLog>, Error> {
        self.inner.attempts(key).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, Error> {
        self.inner.list(filter).await
    }
    async fn children(&self, parent: &Key) -> Result<Vec<Record>, Error> {
        self.inner.children(parent).await
    }
    async fn add_avoided(&self, avoided: &[AvoidedCost]) -> Result<(), Error> {
        self.inner.add_avoided(avoided).await
    }
    async fn costs(&self, op: Option<&str>) -> Result<Vec<CostLine>, Error> {
        self.inner.costs(op).await
    }
    async fn counts(&self, op: Option<&str>) -> Result<Vec<OpCounts>, Error> {
        self.inner.counts(op).await
    }
    async fn forget(&self, key: &Key, force: bool) -> Result<bool, Error> {
        self.inner.forget(key, force).await
    }
    async fn append_chunks(
        &self,
        attempt: &AttemptRef<'_>,
        first: u64,
        chunks: &[StoredChunk],
    ) -> Result<Fence, Error> {
        self.inner.append_chunks(attempt, first, chunks).await
    }
    async fn read_chunks(
        &self,
        key: &Key,
        attempt: u64,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredChunk>, Error> {
        self.inner.read_chunks(key, attempt, from, limit).await
    }
    async fn count_chunks(&self, key: &Key, attempt: u64) -> Result<u64, Error> {
        self.inner.count_chunks(key, attempt).await
    }
    async fn release(&self, key: &Key) -> Result<bool, Error> {
        self.inner.release(key).await
    }
    async fn purge_expired(&self, batch: u32, abandoned_after: Duration) -> Result<u64, Error> {
        self.inner.purge_expired(batch, abandoned_after).await
    }
}
