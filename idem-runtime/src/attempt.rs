//! An attempt this process owns, from its claim until its outcome is in the store: whatever
//! happens to the call's future, the attempt is never left `running` for its lease to run out
//! when this process can still say how it ended.
//!
//! - Dropped while the body runs (a `tokio::time::timeout` around the call, a cancelled task):
//!   the claim is released at once, on a detached task, and the attempt is logged `cancelled`,
//!   so a retry or a waiting duplicate runs at once instead of waiting out the lease.
//! - Dropped while the outcome is being written: the write is finished on a detached task, so a
//!   paid result is recorded, never discarded.
//!
//! Outside a Tokio runtime nothing can be spawned: the lease then expires as after a crash.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::context::BodyState;
use crate::error::Error;
use crate::key::Key;
use crate::record::{Costs, SnapshotKind};
use crate::store::{AttemptRef, Fence, Outcome, Store};

/// What an attempt records, owned (so a detached task can finish writing it).
#[derive(Debug)]
pub(crate) enum Recording {
    /// A value to replay.
    Snapshot { kind: SnapshotKind, bytes: Vec<u8> },
    /// A failure (the body's error text, a panic, or why a value could not be kept).
    Failed { error: String },
}

impl Recording {
    fn outcome<'a>(&'a self, ttl: Duration, cost: Option<&'a Costs>) -> Outcome<'a> {
        match self {
            Recording::Snapshot { kind, bytes } => Outcome::Snapshot {
                kind: *kind,
                bytes,
                ttl,
                cost,
            },
            Recording::Failed { error } => Outcome::Failed { error, ttl, cost },
        }
    }
}

/// A claimed attempt; see the module docs for what its drop does.
#[derive(Debug)]
pub(crate) struct OwnedAttempt {
    store: Arc<dyn Store>,
    op: Cow<'static, str>,
    key: Key,
    attempt: u64,
    ttl: Duration,
    /// What the body counts (its cost, recorded with the outcome).
    body: Arc<BodyState>,
    /// The body may still run: a drop releases the claim.
    running: bool,
    /// The outcome being written: a drop finishes the write.
    pending: Option<Recording>,
}

impl OwnedAttempt {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        op: Cow<'static, str>,
        key: Key,
        attempt: u64,
        ttl: Duration,
        body: Arc<BodyState>,
    ) -> Self {
        Self {
            store,
            op,
            key,
            attempt,
            ttl,
            body,
            running: true,
            pending: None,
        }
    }

    /// Writes `recording` (fenced, retried with backoff while the store is unreachable), wakes
    /// this process's waiters for the key, and hands the recording back. If the call is dropped
    /// meanwhile, the write is finished on a detached task.
    pub(crate) async fn record(
        &mut self,
        recording: Recording,
    ) -> (Result<Fence, Error>, Option<Recording>) {
        self.running = false;
        let cost = self.body.costs();
        if let Some(cost) = &cost {
            crate::metrics::cost_spent(&self.op, cost);
        }
        let recording = self.pending.insert(recording);
        let outcome = recording.outcome(self.ttl, cost.as_ref());
        let fence = write(&*self.store, &self.op, &self.key, self.attempt, outcome).await;
        crate::waiters::wake(&self.key);
        (fence, self.pending.take())
    }

    /// Nothing to release or record: the attempt lost its lease.
    pub(crate) fn settle(&mut self) {
        self.running = false;
    }
}

impl Drop for OwnedAttempt {
    fn drop(&mut self) {
        let recording = self.pending.take();
        if recording.is_none() && !self.running {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                op = %self.op,
                attempt = self.attempt,
                "idem: call dropped outside a Tokio runtime; its lease will expire"
            );
            return;
        };
        let (store, op, key, attempt, ttl) = (
            self.store.clone(),
            std::mem::take(&mut self.op),
            self.key,
            self.attempt,
            self.ttl,
        );
        // A pending recording's cost was counted when its write began.
        let cost = self.body.costs();
        if recording.is_none() {
            crate::metrics::cancelled(&op);
            if let Some(cost) = &cost {
                crate::metrics::cost_spent(&op, cost);
            }
        }
        runtime.spawn(async move {
            let cost = cost.as_ref();
            let outcome = match &recording {
                Some(recording) => recording.outcome(ttl, cost),
                None => Outcome::Cancelled { ttl, cost },
            };
            match write(&*store, &op, &key, attempt, outcome).await {
                Ok(_) => {}
                Err(error) => tracing::error!(
                    %op, attempt, %error,
                    "idem: could not settle a dropped call's attempt; its lease will expire"
                ),
            }
            crate::waiters::wake(&key);
        });
    }
}

/// How a write the caller already paid for (a completion, a stream's chunks) is retried while
/// the store is unreachable: six times, from 20 ms to 1 s apart.
pub(crate) fn store_write_retries() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(6)
        .with_jitter()
}

/// The fenced completion, retried with backoff while the store is unreachable.
pub(crate) async fn write(
    store: &dyn Store,
    op: &str,
    key: &Key,
    attempt: u64,
    outcome: Outcome<'_>,
) -> Result<Fence, Error> {
    let attempt = AttemptRef { op, key, attempt };
    (|| store.complete(&attempt, outcome))
        .retry(store_write_retries())
        .when(Error::is_store_failure)
        .notify(|error, pause| {
            tracing::warn!(%error, ?pause, "idem: recording the outcome failed; retrying");
        })
        .await
}
