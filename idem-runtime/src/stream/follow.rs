//! Streams that read a journal instead of running the body: the replay of a recorded stream (from
//! the store a page at a time, so a stream of any length replays in bounded memory, or from the
//! process cache), and a duplicate following an attempt that is generating the stream right now
//! (the chunks so far, then each batch as it is journaled, until the stream is recorded).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{StreamSummary, Streamed, PAGE};
use crate::call::KeyedCall;
use crate::error::Error;
use crate::execute::Errors;
use crate::handle::Handle;
use crate::record::{now_millis, Snapshot, SnapshotKind, Status};
use crate::replay::{decode, ErrorPolicy};
use crate::store::StoredChunk;
use crate::wait::{NOTIFIED_POLL_CAP, POLL_CAP};
use crate::waiters::Waiting;

/// Replays a recorded stream: from `cached` chunks, or from the store.
pub(crate) fn recorded<C, E, P>(
    handle: &Arc<Handle>,
    call: KeyedCall,
    snapshot: Snapshot,
    cached: Option<Arc<[StoredChunk]>>,
    errors: Errors<E, P>,
    cache_epoch: u64,
) -> Streamed<C, E>
where
    C: DeserializeOwned + Send + 'static,
    E: Send + 'static,
    P: ErrorPolicy<E> + Send + 'static,
{
    let attempt = snapshot.attempt;
    let mut follower = Follower::new(handle, call, attempt, errors);
    follower.phase = Phase::Recorded(snapshot);
    follower.cache_epoch = cache_epoch;
    if let Some(chunks) = cached {
        follower.source = Source::Cached { chunks, at: 0 };
        follower.kept = None;
    }
    follower.into_stream()
}

/// Follows `attempt`, which is generating the stream now.
pub(crate) fn live<C, E, P>(
    handle: &Arc<Handle>,
    call: KeyedCall,
    attempt: u64,
    errors: Errors<E, P>,
) -> Streamed<C, E>
where
    C: DeserializeOwned + Send + 'static,
    E: Send + 'static,
    P: ErrorPolicy<E> + Send + 'static,
{
    let mut follower = Follower::new(handle, call, attempt, errors);
    follower.waiting = Some(Waiting::on(follower.call.key));
    follower.into_stream()
}

/// Where the chunks come from.
enum Source {
    Cached {
        chunks: Arc<[StoredChunk]>,
        at: usize,
    },
    Store {
        page: VecDeque<StoredChunk>,
    },
}

/// What is known of the stream's end.
enum Phase {
    /// Its attempt is still generating it.
    Live,
    /// It is recorded: what remains is in the journal, then this snapshot says how it ended.
    Recorded(Snapshot),
    /// Its attempt ended without recording it: what remains is in the journal, then the stream
    /// ends with [`Error::StreamInterrupted`].
    Interrupted,
}

struct Follower<C, E, P> {
    handle: Arc<Handle>,
    call: KeyedCall,
    attempt: u64,
    errors: Errors<E, P>,
    source: Source,
    phase: Phase,
    /// The number of the next chunk to yield.
    next: u64,
    /// Registered while following a live stream: the owner's journal wakes it.
    waiting: Option<Waiting>,
    /// When chunk 0 was (for the original pacing).
    paced_from: Option<Instant>,
    /// A copy of what a store replay read, for the process cache, while small enough.
    kept: Option<Vec<StoredChunk>>,
    kept_bytes: usize,
    cache_epoch: u64,
    ended: bool,
    chunk: PhantomData<fn() -> C>,
}

impl<C, E, P> Follower<C, E, P>
where
    C: DeserializeOwned + Send + 'static,
    E: Send + 'static,
    P: ErrorPolicy<E> + Send + 'static,
{
    fn new(handle: &Arc<Handle>, call: KeyedCall, attempt: u64, errors: Errors<E, P>) -> Self {
        let cacheable = handle.cache.is_some() && call.options.stream.cache_bytes > 0;
        Self {
            cache_epoch: handle.cache.as_ref().map_or(0, |c| c.epoch()),
            handle: handle.clone(),
            call,
            attempt,
            errors,
            source: Source::Store {
                page: VecDeque::new(),
            },
            phase: Phase::Live,
            next: 0,
            waiting: None,
            paced_from: None,
            kept: cacheable.then(Vec::new),
            kept_bytes: 0,
            ended: false,
            chunk: PhantomData,
        }
    }

    fn into_stream(self) -> Streamed<C, E> {
        Streamed::new(futures_util::stream::unfold(self, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        }))
    }

    fn fail(&mut self, error: Error) -> Option<Result<C, E>> {
        self.ended = true;
        Some(Err((self.errors.from_idem)(error)))
    }

    async fn next(&mut self) -> Option<Result<C, E>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(chunk) = self.buffered() {
                return Some(self.yield_chunk(chunk).await);
            }
            // Nothing at hand: read on, or learn how the stream ends.
            if let Source::Cached { .. } = self.source {
                return self.end_recorded();
            }
            // Armed before the read, so a batch journaled after it wakes this follower.
            let notify: Option<Arc<Notify>> = self.waiting.as_ref().map(Waiting::notifier);
            let mut woken = pin!(notify.as_deref().map(Notify::notified));
            if let Some(woken) = woken.as_mut().as_pin_mut() {
                woken.enable();
            }
            match self.read_page().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => return self.fail(error),
            }
            match &self.phase {
                Phase::Recorded(_) => return self.end_recorded(),
                Phase::Interrupted => {
                    let error = Error::StreamInterrupted {
                        op: self.call.op.to_string(),
                        key: self.call.key,
                        attempt: self.attempt,
                        chunks: self.next,
                    };
                    return self.fail(error);
                }
                Phase::Live => {}
            }
            // Caught up with a live stream: is its attempt still at it?
            let record = match self.handle.store.get(&self.call.key).await {
                Ok(record) => record,
                Err(error) => return self.fail(error),
            };
            match record {
                Some(r) if r.attempt == self.attempt && r.status == Status::Completed => {
                    let (Some(bytes), Some(kind)) = (r.snapshot, r.snapshot_kind) else {
                        return self.fail(self.corrupt("completed record without a snapshot"));
                    };
                    self.phase = Phase::Recorded(Snapshot {
                        attempt: r.attempt,
                        kind,
                        bytes,
                        expires_at: r.expires_at.unwrap_or(i64::MAX),
                        fingerprint: r.fingerprint,
                        cost: r.cost,
                    });
                }
                Some(r)
                    if r.attempt == self.attempt
                        && r.status == Status::Running
                        && r.lease_until.is_some_and(|l| l > now_millis()) =>
                {
                    let cap = if self.handle.store.wakes_waiters() {
                        NOTIFIED_POLL_CAP
                    } else {
                        POLL_CAP
                    };
                    let left = r.lease_until.map_or(0, |l| l.saturating_sub(now_millis()));
                    let pause = cap.min(Duration::from_millis(u64::try_from(left).unwrap_or(0)));
                    match woken.as_pin_mut() {
                        Some(woken) => {
                            tokio::select! {
                                () = woken => {}
                                () = self.handle.store.wait_for_change(&self.call.key, pause) => {}
                            }
                        }
                        None => tokio::time::sleep(pause).await,
                    }
                }
                _ => self.phase = Phase::Interrupted,
            }
        }
    }

    /// The next chunk already read, if any.
    fn buffered(&mut self) -> Option<StoredChunk> {
        match &mut self.source {
            Source::Cached { chunks, at } => {
                let chunk = chunks.get(*at)?.clone();
                *at += 1;
                Some(chunk)
            }
            Source::Store { page } => page.pop_front(),
        }
    }

    /// Reads the next page from the store; `false` when the journal has nothing more yet.
    async fn read_page(&mut self) -> Result<bool, Error> {
        let Source::Store { page } = &mut self.source else {
            return Ok(false);
        };
        let chunks = self
            .handle
            .store
            .read_chunks(&self.call.key, self.attempt, self.next, PAGE)
            .await?;
        if let Some(kept) = &mut self.kept {
            self.kept_bytes += chunks.iter().map(|c| c.bytes.len()).sum::<usize>();
            if self.kept_bytes <= self.call.options.stream.cache_bytes {
                kept.extend(chunks.iter().cloned());
            } else {
                self.kept = None;
            }
        }
        let any = !chunks.is_empty();
        page.extend(chunks);
        Ok(any)
    }

    async fn yield_chunk(&mut self, chunk: StoredChunk) -> Result<C, E> {
        if self.call.options.stream.pacing {
            let offset = Duration::from_millis(u64::from(chunk.offset_ms));
            let from = *self
                .paced_from
                .get_or_insert_with(|| Instant::now() - offset);
            tokio::time::sleep_until(from + offset).await;
        }
        let number = self.next;
        self.next += 1;
        serde_json::from_slice(&chunk.bytes).map_err(|source| {
            self.ended = true;
            (self.errors.from_idem)(Error::ChunkDecode {
                op: self.call.op.to_string(),
                key: self.call.key,
                attempt: self.attempt,
                chunk: number,
                source,
            })
        })
    }

    /// Every chunk of a recorded stream was yielded: end it as the record says.
    fn end_recorded(&mut self) -> Option<Result<C, E>> {
        self.ended = true;
        let Phase::Recorded(snapshot) = &self.phase else {
            return None;
        };
        match snapshot.kind {
            SnapshotKind::Ok => {
                match serde_json::from_slice::<StreamSummary>(&snapshot.bytes) {
                    Ok(summary) if summary.chunks == self.next => {}
                    Ok(summary) => {
                        let reason = format!(
                            "the stream's record says {} chunks, its journal has {}",
                            summary.chunks, self.next
                        );
                        return self.fail(self.corrupt(&reason));
                    }
                    Err(source) => {
                        return self.fail(Error::SnapshotDecode {
                            op: self.call.op.to_string(),
                            key: self.call.key,
                            attempt: self.attempt,
                            source,
                        })
                    }
                }
                if let (Some(cache), Some(kept)) = (&self.handle.cache, self.kept.take()) {
                    cache.insert_stream_read_at(
                        self.cache_epoch,
                        self.call.key,
                        snapshot.clone(),
                        kept.into(),
                    );
                }
                None
            }
            // A recorded error (`cache_errors`) ends the replay as it ended the original.
            SnapshotKind::Err => {
                match decode::<(), E, P>(
                    &self.call,
                    snapshot,
                    &self.errors.policy,
                    self.errors.from_idem,
                ) {
                    Err(err) => Some(Err(err)),
                    Ok(()) => None,
                }
            }
        }
    }

    fn corrupt(&self, reason: &str) -> Error {
        Error::Corrupt {
            op: self.call.op.to_string(),
            key: self.call.key,
            reason: reason.to_owned(),
        }
    }
}
