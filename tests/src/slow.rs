//! A store wrapper whose completions take a while: the window in which a call can be dropped
//! after its body returned and before its outcome is written.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use idem_runtime::record::{AttemptLog, Record};
use idem_runtime::store::{
    AttemptRef, ChangeSink, Claim, ClaimRequest, Fence, ListFilter, Outcome, Store,
};
use idem_runtime::{Error, Key};

/// Every operation goes to the wrapped store; [`Store::complete`] first sleeps for the given time.
#[derive(Debug)]
pub struct SlowComplete(pub Arc<dyn Store>, pub Duration);

#[async_trait]
impl Store for SlowComplete {
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
        tokio::time::sleep(self.1).await;
        self.0.complete(attempt, outcome).await
    }
    async fn wait_for_change(&self, key: &Key, max: Duration) {
        self.0.wait_for_change(key, max).await;
    }
    fn wakes_waiters(&self) -> bool {
        self.0.wakes_waiters()
    }
    fn watch(&self, sink: Weak<dyn ChangeSink>) -> bool {
        self.0.watch(sink)
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
