//! The attempt that generates a stream: runs the body, yields each chunk to its caller as the
//! body's stream does, hands it to the journal, and records how the stream ended. Dropping the
//! stream part-way cancels the attempt as dropping any call does (the claim is released at once,
//! the attempt logged `cancelled`); the chunks journaled so far stay with the record.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;

use super::journal::{Journal, Journaled};
use super::{StreamSummary, Streamed};
use crate::attempt::{OwnedAttempt, Recording};
use crate::call::KeyedCall;
use crate::context::{with_current, CallInfo};
use crate::error::Error;
use crate::execute::{error_snapshot, outcome, Errors};
use crate::handle::Handle;
use crate::lease::{hold, run_under_lease, Heartbeat, LeaseHold, LeaseSignal, Ran};
use crate::metrics::{CallOutcome, Unrecorded};
use crate::record::{now_millis, Snapshot, SnapshotKind};
use crate::replay::ErrorPolicy;
use crate::store::{millis, StoredChunk};

/// Runs the body as attempt `attempt`; its stream, journaled, is what the caller gets.
pub(crate) async fn start<C, E, P, F, Fut>(
    handle: &Arc<Handle>,
    call: KeyedCall,
    attempt: u64,
    errors: Errors<E, P>,
    body: F,
) -> Result<Streamed<C, E>, E>
where
    C: Serialize + Send + 'static,
    E: Display + Send + 'static,
    P: ErrorPolicy<E> + Send + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Streamed<C, E>, E>>,
{
    let counted = Arc::new(crate::context::BodyState::default());
    let mut owned = OwnedAttempt::new(
        handle.store.clone(),
        call.op.clone(),
        call.key,
        attempt,
        call.options.ttl,
        counted.clone(),
    );
    let signal = LeaseSignal::default();
    let info = CallInfo::new(
        call.op.clone(),
        call.key,
        attempt,
        call.parent,
        signal.clone(),
        counted.clone(),
    );
    let heartbeat = || {
        call.options.heartbeat.then(|| Heartbeat {
            store: handle.store.clone(),
            op: call.op.clone(),
            key: call.key,
            attempt,
            lease: call.options.lease,
            signal: signal.clone(),
        })
    };
    let produced = match run_under_lease(
        heartbeat(),
        &call.options,
        with_current(info.clone(), body()),
    )
    .await
    {
        Ran::Finished(produced) => produced,
        Ran::Aborted => {
            owned.settle();
            outcome(&call.op, CallOutcome::Aborted);
            return Err((errors.from_idem)(lease_lost(&call, attempt)));
        }
    };
    let inner = match produced {
        Ok(inner) => inner,
        Err(err) => {
            // The body failed before it had a stream: an ordinary failed call.
            let recording =
                match error_snapshot(&err, &call, handle.max_snapshot_bytes, &errors.policy) {
                    Some(bytes) => Recording::Snapshot {
                        kind: SnapshotKind::Err,
                        bytes,
                    },
                    None => Recording::Failed {
                        error: err.to_string(),
                    },
                };
            outcome(&call.op, CallOutcome::Failed);
            if let (Err(e), _) = owned.record(recording).await {
                tracing::error!(error = %e, "idem: could not record the failure; the lease will expire");
            }
            return Err(err);
        }
    };
    let journal = Journal::start(
        handle.store.clone(),
        call.op.clone(),
        call.key,
        attempt,
        &call.options.stream,
    );
    let owner = Owner {
        _lease: heartbeat().map(hold),
        inner,
        journal: Some(journal),
        owned,
        signal,
        info,
        handle: handle.clone(),
        errors,
        started: Instant::now(),
        chunks: 0,
        bytes: 0,
        kept: (call.options.stream.cache_bytes > 0 && handle.cache.is_some()).then(Vec::new),
        call,
        ended: false,
    };
    Ok(Streamed::new(futures_util::stream::unfold(
        owner,
        |mut owner| async move {
            let item = owner.next().await?;
            Some((item, owner))
        },
    )))
}

fn lease_lost(call: &KeyedCall, attempt: u64) -> Error {
    Error::LeaseLost {
        op: call.op.to_string(),
        key: call.key,
        attempt,
    }
}

/// The generating attempt, between two chunks.
struct Owner<C, E, P> {
    inner: Streamed<C, E>,
    journal: Option<Journal>,
    /// Dropped with the stream: a stream dropped part-way releases the claim.
    owned: OwnedAttempt,
    /// Renews the lease while the caller consumes the stream.
    _lease: Option<LeaseHold>,
    signal: LeaseSignal,
    info: CallInfo,
    call: KeyedCall,
    handle: Arc<Handle>,
    errors: Errors<E, P>,
    started: Instant,
    chunks: u64,
    bytes: u64,
    /// A copy of the chunks for the process cache, while the stream is small enough to cache.
    kept: Option<Vec<StoredChunk>>,
    ended: bool,
}

impl<C, E, P> Owner<C, E, P>
where
    C: Serialize,
    E: Display,
    P: ErrorPolicy<E>,
{
    async fn next(&mut self) -> Option<Result<C, E>> {
        if self.ended {
            return None;
        }
        if self.call.options.abort_on_lease_loss && self.signal.is_lost() {
            self.ended = true;
            self.journal = None;
            self.owned.settle();
            outcome(&self.call.op, CallOutcome::Aborted);
            let error = lease_lost(&self.call, self.info.attempt);
            return Some(Err((self.errors.from_idem)(error)));
        }
        let item = with_current(self.info.clone(), self.inner.next()).await;
        match item {
            Some(Ok(chunk)) => match self.journal_chunk(&chunk) {
                Ok(()) => Some(Ok(chunk)),
                Err(error) => {
                    self.ended = true;
                    self.fail(error.to_string()).await;
                    Some(Err((self.errors.from_idem)(error)))
                }
            },
            Some(Err(err)) => {
                self.ended = true;
                let recording = self.error_recording(&err);
                self.end_with_error(recording).await;
                Some(Err(err))
            }
            None => {
                self.ended = true;
                self.complete().await;
                None
            }
        }
    }

    /// Encodes a chunk, checks the limits, and hands it to the journal.
    fn journal_chunk(&mut self, chunk: &C) -> Result<(), Error> {
        let (op, key, limits) = (&self.call.op, self.call.key, &self.call.options.stream);
        let bytes = serde_json::to_vec(chunk).map_err(|source| Error::ChunkEncode {
            op: op.to_string(),
            key,
            chunk: self.chunks,
            source,
        })?;
        if bytes.len() > limits.max_chunk_bytes {
            return Err(Error::ChunkTooLarge {
                op: op.to_string(),
                key,
                chunk: self.chunks,
                size: bytes.len(),
                limit: limits.max_chunk_bytes,
            });
        }
        let too_long = |limit: String| Error::StreamTooLong {
            op: op.to_string(),
            key,
            limit,
        };
        if self.chunks >= limits.max_chunks {
            return Err(too_long(format!("{} chunks", limits.max_chunks)));
        }
        let total = self.bytes + bytes.len() as u64;
        if total > limits.max_bytes {
            return Err(too_long(format!("{} bytes", limits.max_bytes)));
        }
        let chunk = StoredChunk {
            offset_ms: u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX),
            bytes,
        };
        if let Some(kept) = &mut self.kept {
            if total <= limits.cache_bytes as u64 {
                kept.push(chunk.clone());
            } else {
                self.kept = None;
            }
        }
        self.chunks += 1;
        self.bytes = total;
        if let Some(journal) = &self.journal {
            // `false`: the journal stopped (fenced, or the store failed); it says why at the end.
            journal.push(chunk);
        }
        Ok(())
    }

    /// Waits for the journal, then says whether every chunk is in the store.
    async fn finish_journal(&mut self) -> Result<(), Option<Error>> {
        match self.journal.take() {
            Some(journal) => match journal.finish().await {
                Journaled::All(journaled) if journaled == self.chunks => Ok(()),
                Journaled::All(journaled) => Err(Some(Error::Corrupt {
                    op: self.call.op.to_string(),
                    key: self.call.key,
                    reason: format!(
                        "the stream's journal took {journaled} of its {} chunks",
                        self.chunks
                    ),
                })),
                Journaled::Fenced => Err(None),
                Journaled::Failed(error) => Err(Some(error)),
            },
            None => Err(None),
        }
    }

    /// The stream ended: record its summary, and keep a small one in the process cache.
    async fn complete(&mut self) {
        if let Err(failure) = self.finish_journal().await {
            return self.journal_lost(failure).await;
        }
        let summary = StreamSummary {
            chunks: self.chunks,
            bytes: self.bytes,
        };
        let bytes = match serde_json::to_vec(&summary) {
            Ok(bytes) => bytes,
            Err(e) => return self.fail(format!("the stream's summary: {e}")).await,
        };
        let epoch = self.handle.cache.as_ref().map_or(0, |c| c.epoch());
        match self
            .owned
            .record(Recording::Snapshot {
                kind: SnapshotKind::Ok,
                bytes,
            })
            .await
        {
            (Ok(crate::store::Fence::Owned), recording) => {
                if let (Some(cache), Some(kept), Some(Recording::Snapshot { kind, bytes })) =
                    (&self.handle.cache, self.kept.take(), recording)
                {
                    let snapshot = Snapshot {
                        attempt: self.info.attempt,
                        kind,
                        bytes,
                        expires_at: now_millis().saturating_add(millis(self.call.options.ttl)),
                        fingerprint: self.call.fingerprint,
                        cost: self.info.body.costs(),
                    };
                    cache.insert_stream_read_at(epoch, self.call.key, snapshot, kept.into());
                }
            }
            (Ok(crate::store::Fence::Lost), _) => self.fenced(),
            (Err(error), _) => {
                outcome(
                    &self.call.op,
                    CallOutcome::Unrecorded(Unrecorded::StoreUnreachable),
                );
                tracing::error!(%error, "idem: the end of the stream could not be recorded; a later call may generate it again");
            }
        }
    }

    /// How an error that ends the body's stream is recorded: as the error (under
    /// `cache_errors`), or as the record's failure; the chunks before it stay for inspection.
    fn error_recording(&self, err: &E) -> Recording {
        match error_snapshot(
            err,
            &self.call,
            self.handle.max_snapshot_bytes,
            &self.errors.policy,
        ) {
            Some(bytes) => Recording::Snapshot {
                kind: SnapshotKind::Err,
                bytes,
            },
            None => Recording::Failed {
                error: format!("{err} (after {} chunks)", self.chunks),
            },
        }
    }

    /// The body's stream ended with an error, to be recorded as `recording`.
    async fn end_with_error(&mut self, recording: Recording) {
        if let Err(failure) = self.finish_journal().await {
            return self.journal_lost(failure).await;
        }
        outcome(&self.call.op, CallOutcome::Failed);
        self.record_failure(recording).await;
    }

    /// The stream ends with one of idem's errors (a chunk that cannot be kept): the record is
    /// marked failed with it.
    async fn fail(&mut self, error: String) {
        let _ = self.finish_journal().await;
        outcome(&self.call.op, CallOutcome::Failed);
        self.record_failure(Recording::Failed {
            error: format!("{error} (after {} chunks)", self.chunks),
        })
        .await;
    }

    async fn record_failure(&mut self, recording: Recording) {
        match self.owned.record(recording).await {
            (Ok(crate::store::Fence::Owned), _) => {}
            (Ok(crate::store::Fence::Lost), _) => self.fenced(),
            (Err(error), _) => {
                tracing::error!(%error, "idem: could not record the stream's failure; the lease will expire");
            }
        }
    }

    /// The journal could not take every chunk: the caller got them all, but a replay could not,
    /// so nothing is recorded as complete.
    async fn journal_lost(&mut self, failure: Option<Error>) {
        match failure {
            None => {
                self.owned.settle();
                self.fenced();
            }
            Some(error) => {
                outcome(
                    &self.call.op,
                    CallOutcome::Unrecorded(Unrecorded::StoreUnreachable),
                );
                tracing::error!(%error, "idem: the stream's chunks could not all be journaled; the next call generates it again");
                self.record_failure(Recording::Failed {
                    error: format!("the stream's chunks could not all be journaled: {error}"),
                })
                .await;
            }
        }
    }

    fn fenced(&self) {
        outcome(&self.call.op, CallOutcome::Fenced);
        tracing::warn!(
            attempt = self.info.attempt,
            "idem: this stream's attempt lost its lease; its caller got every chunk, but the key's record is another attempt's"
        );
    }
}
