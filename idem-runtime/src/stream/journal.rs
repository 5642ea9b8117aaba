//! The journal of one attempt's stream: a task that appends the owner's chunks to the store in
//! batches (bounded by count and by time), so the caller's path only encodes a chunk and hands
//! it over. Appends are fenced by attempt: once the attempt has lost its key, nothing more is
//! written, and a later owner's chunks (journaled under its own attempt) never mix with these.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::StreamOptions;
use crate::attempt::store_write_retries;
use crate::error::Error;
use crate::key::Key;
use crate::store::{AttemptRef, Fence, Store, StoredChunk};

/// How many batches' worth of chunks already waiting one append may take.
const BACKLOG_BATCHES: usize = 16;

/// How the journal ended.
#[derive(Debug)]
pub(crate) enum Journaled {
    /// Every chunk handed over is in the store: this many.
    All(u64),
    /// The attempt lost its key (taken over or released): the store refused further chunks.
    Fenced,
    /// The store failed, even after retries: the journal is incomplete.
    Failed(Error),
}

/// The owner's side of the journal.
#[derive(Debug)]
pub(crate) struct Journal {
    chunks: mpsc::UnboundedSender<StoredChunk>,
    ended: oneshot::Receiver<Journaled>,
}

impl Journal {
    /// Starts the journal of `attempt` of `key`.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        op: Cow<'static, str>,
        key: Key,
        attempt: u64,
        options: &StreamOptions,
    ) -> Self {
        let (chunks, received) = mpsc::unbounded_channel();
        let (done, ended) = oneshot::channel();
        let batch = options.batch_chunks.max(1) as usize;
        let interval = options.batch_interval;
        tokio::spawn(async move {
            let journaled =
                append_all(&*store, &op, &key, attempt, received, batch, interval).await;
            let _ = done.send(journaled);
        });
        Self { chunks, ended }
    }

    /// Hands a chunk over; `false` once the journal has stopped (fenced or failed).
    pub(crate) fn push(&self, chunk: StoredChunk) -> bool {
        self.chunks.send(chunk).is_ok()
    }

    /// Waits until every chunk handed over is appended (or the journal stopped).
    pub(crate) async fn finish(self) -> Journaled {
        drop(self.chunks);
        self.ended.await.unwrap_or_else(|_| {
            Journaled::Failed(Error::Config(
                "idem: the stream journal's task ended without a word (its runtime shut down)"
                    .into(),
            ))
        })
    }
}

/// Appends batches until the owner hangs up, then reports.
async fn append_all(
    store: &dyn Store,
    op: &str,
    key: &Key,
    attempt: u64,
    mut received: mpsc::UnboundedReceiver<StoredChunk>,
    batch: usize,
    interval: Duration,
) -> Journaled {
    let attempt_ref = AttemptRef { op, key, attempt };
    let mut next = 0u64;
    let mut chunks = Vec::with_capacity(batch);
    loop {
        let Some(first) = received.recv().await else {
            return Journaled::All(next);
        };
        chunks.push(first);
        let due = Instant::now() + interval;
        let mut hung_up = false;
        while chunks.len() < batch {
            tokio::select! {
                biased;
                chunk = received.recv() => match chunk {
                    Some(chunk) => chunks.push(chunk),
                    None => {
                        hung_up = true;
                        break;
                    }
                },
                () = tokio::time::sleep_until(due) => break,
            }
        }
        // A producer faster than the store leaves a backlog: append it with this batch rather
        // than one batch per round trip, so the journal catches up (bounded, to keep each
        // statement small).
        while chunks.len() < batch * BACKLOG_BATCHES && !hung_up {
            match received.try_recv() {
                Ok(chunk) => chunks.push(chunk),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => hung_up = true,
            }
        }
        match append(store, &attempt_ref, next, &chunks).await {
            Ok(Fence::Owned) => {
                next += chunks.len() as u64;
                chunks.clear();
                // Followers in this process read the new chunks at once.
                crate::waiters::wake(key);
            }
            Ok(Fence::Lost) => return Journaled::Fenced,
            Err(error) => return Journaled::Failed(error),
        }
        if hung_up {
            return Journaled::All(next);
        }
    }
}

/// One fenced append, retried with backoff while the store is unreachable (a retried append of
/// chunks already in the store leaves them as they are).
async fn append(
    store: &dyn Store,
    attempt: &AttemptRef<'_>,
    first: u64,
    chunks: &[StoredChunk],
) -> Result<Fence, Error> {
    (|| store.append_chunks(attempt, first, chunks))
        .retry(store_write_retries())
        .when(Error::is_store_failure)
        .notify(|error, pause| {
            tracing::warn!(%error, ?pause, "idem: appending stream chunks failed; retrying");
        })
        .await
}
