//! A store wrapper that hides its store's change feed, so tests can pin down what a snapshot
//! cache does when nothing tells it of other processes' changes (SQLite; a PostgreSQL store
//! whose listener is down).

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use idem_runtime::record::{AttemptLog, Record};
use idem_runtime::store::{
    AttemptRef, ChangeSink, Claim, ClaimRequest, Fence, ListFilter, Outcome, Store,
};
use idem_runtime::{Error, Key};

/// Every operation goes to the wrapped store, except [`Store::watch`], which says "cannot".
#[derive(Debug)]
pub struct Unwatched(pub Arc<dyn Store>);

#[async_trait]
impl Store for Unwatched {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, Error> {
        self.0.claim(req).await
    }
    async fn renew(&self, attempt: &AttemptRef<'_>, lease: Duration) -> Result<Fence, Error> {
        self.0.renew(attempt, lease).await
    }
    async fn complete(
        &self,
        attempt: &AttemptRef<'_>,
        outcome: Outcome<'_>,
    ) -> Result<Fence, Error> {
        self.0.complete(attempt, outcome).await
    }
    async fn wait_for_change(&self, key: &Key, max: Duration) {
        self.0.wait_for_change(key, max).await;
    }
    fn watch(&self, _sink: Weak<dyn ChangeSink>) -> bool {
        false
    }
    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        self.0.get(key).await
    }
    async fn attempts(&self, key: &Key) -> Result<Vec<AttemptLog>, Error> {
        self.0.attempts(key).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, Error> {
        self.0.list(filter).await
    }
    async fn forget(&self, key: &Key, force: bool) -> Result<bool, Error> {
        self.0.forget(key, force).await
    }
    async fn release(&self, key: &Key) -> Result<bool, Error> {
        self.0.release(key).await
    }
    async fn purge_expired(&self, batch: u32, abandoned_after: Duration) -> Result<u64, Error> {
        self.0.purge_expired(batch, abandoned_after).await
    }
}
