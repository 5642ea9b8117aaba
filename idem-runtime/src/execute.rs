//! The life of a call (DESIGN §4): cached replay, claim (replay / wait / take over / refuse),
//! run with a heartbeat, fenced complete, and convergence of a fenced attempt.

use std::any::Any;
use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::call::{Finished, OnConflict};
use crate::context::{with_current, CallInfo};
use crate::error::Error;
use crate::idem::Idem;
use crate::lease::run_with_heartbeat;
use crate::record::{now_millis, Snapshot, SnapshotKind, Status};
use crate::store::{millis, AttemptRef, Claim, Fence, Outcome};

/// Whether a call records `Err` values (and so can replay them).
pub(crate) trait ErrorPolicy<E> {
    /// The snapshot of an error, or `None` when errors are not recorded.
    fn encode(err: &E) -> Option<Result<Vec<u8>, serde_json::Error>>;
    /// The error a snapshot holds, or `None` when this call site does not record errors.
    fn decode(bytes: &[u8]) -> Option<Result<E, serde_json::Error>>;
}

/// Errors are not recorded: a failed body leaves a `failed` record that the next call retries.
#[derive(Debug)]
pub(crate) struct NoErrorCache(PhantomData<()>);

impl<E> ErrorPolicy<E> for NoErrorCache {
    fn encode(_: &E) -> Option<Result<Vec<u8>, serde_json::Error>> {
        None
    }
    fn decode(_: &[u8]) -> Option<Result<E, serde_json::Error>> {
        None
    }
}

/// Errors are recorded and replayed (`cache_errors`).
#[derive(Debug)]
pub(crate) struct CacheErrors(PhantomData<()>);

impl<E: Serialize + DeserializeOwned> ErrorPolicy<E> for CacheErrors {
    fn encode(err: &E) -> Option<Result<Vec<u8>, serde_json::Error>> {
        Some(serde_json::to_vec(err))
    }
    fn decode(bytes: &[u8]) -> Option<Result<E, serde_json::Error>> {
        Some(serde_json::from_slice(bytes))
    }
}

/// The longest pause between two looks at a key another attempt is running.
pub(crate) const MAX_POLL: Duration = Duration::from_millis(250);

pub(crate) async fn run<T, E, P, F, Fut>(idem: &Idem, call: Finished, body: F) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    E: From<Error> + Display,
    P: ErrorPolicy<E>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let span = tracing::info_span!(
        "idem.call",
        op = %call.op,
        key = %call.key.short(),
        attempt = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    run_in_span::<T, E, P, F, Fut>(idem, call, body)
        .instrument(span)
        .await
}

#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
fn outcome(op: &std::borrow::Cow<'static, str>, name: &'static str) {
    tracing::Span::current().record("outcome", name);
    crate::metrics::outcome(op, name);
}

async fn run_in_span<T, E, P, F, Fut>(idem: &Idem, call: Finished, body: F) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    E: From<Error> + Display,
    P: ErrorPolicy<E>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let inner = &idem.inner;
    if let Some(entry) = inner.cache.as_ref().and_then(|c| c.get(&call.key)) {
        if fingerprints_differ(
            entry.snapshot.fingerprint.as_ref(),
            call.fingerprint.as_ref(),
        ) {
            return Err(key_reuse(&call).into());
        }
        tracing::Span::current().record("outcome", "replayed");
        crate::metrics::cache_replay(&call.op);
        return decode::<T, E, P>(&call, &entry.snapshot);
    }

    let started = Instant::now();
    let mut poll = Duration::from_millis(2);
    let mut waited = false;
    loop {
        let request = call.claim_request(&inner.worker);
        // A change pushed after this point may postdate what the claim reads: see `cache.rs`.
        let epoch = inner.cache.as_ref().map_or(0, |c| c.epoch());
        // Fail closed: no claim, no body.
        let claim_started = Instant::now();
        let claimed = inner.store.claim(&request).await;
        crate::metrics::claim(
            inner.store.backend(),
            claim_started.elapsed(),
            claimed.is_ok(),
        );
        match claimed? {
            Claim::Completed(snapshot) => {
                outcome(&call.op, if waited { "waited" } else { "replayed" });
                let decoded = decode::<T, E, P>(&call, &snapshot);
                if let Some(cache) = &inner.cache {
                    cache.insert_read_at(epoch, call.key, snapshot);
                }
                return decoded;
            }
            Claim::KeyReuse => {
                outcome(&call.op, "key_reuse");
                return Err(key_reuse(&call).into());
            }
            Claim::Running {
                attempt,
                lease_left,
            } => {
                let elapsed = started.elapsed();
                if call.options.on_conflict == OnConflict::Error || elapsed >= call.options.wait {
                    outcome(&call.op, "in_progress");
                    return Err(Error::InProgress {
                        op: call.op.to_string(),
                        key: call.key,
                        attempt,
                        waited: elapsed,
                    }
                    .into());
                }
                waited = true;
                let pause = poll
                    .min(call.options.wait - elapsed)
                    .min(lease_left + Duration::from_millis(1));
                inner.store.wait_for_change(&call.key, pause).await;
                poll = (poll * 2).min(MAX_POLL);
            }
            Claim::Acquired { attempt, took_over } => {
                tracing::Span::current().record("attempt", attempt);
                outcome(
                    &call.op,
                    if took_over.is_some() {
                        "taken_over"
                    } else {
                        "executed"
                    },
                );
                if let Some(old) = took_over {
                    tracing::warn!(
                        old,
                        attempt,
                        "idem: took over an attempt whose lease expired"
                    );
                }
                return execute::<T, E, P, F, Fut>(idem, &call, attempt, body).await;
            }
        }
    }
}

pub(crate) fn fingerprints_differ(
    have: Option<&crate::key::Fingerprint>,
    want: Option<&crate::key::Fingerprint>,
) -> bool {
    matches!((have, want), (Some(h), Some(w)) if h != w)
}

pub(crate) fn key_reuse(call: &Finished) -> Error {
    Error::KeyReuse {
        op: call.op.to_string(),
        key: call.key,
    }
}

pub(crate) fn decode<T, E, P>(call: &Finished, snapshot: &Snapshot) -> Result<T, E>
where
    T: DeserializeOwned,
    E: From<Error>,
    P: ErrorPolicy<E>,
{
    let undecodable = |source| Error::SnapshotDecode {
        op: call.op.to_string(),
        key: call.key,
        attempt: snapshot.attempt,
        source,
    };
    match snapshot.kind {
        SnapshotKind::Ok => {
            serde_json::from_slice(&snapshot.bytes).map_err(|e| undecodable(e).into())
        }
        SnapshotKind::Err => match P::decode(&snapshot.bytes) {
            Some(Ok(err)) => Err(err),
            Some(Err(e)) => Err(undecodable(e).into()),
            None => Err(Error::Corrupt {
                op: call.op.to_string(),
                key: call.key,
                reason: "the record holds an error value, but this call site does not use \
                         `cache_errors`; forget the key or restore `cache_errors`"
                    .into(),
            }
            .into()),
        },
    }
}

/// Runs the body as attempt `attempt` and records its outcome.
async fn execute<T, E, P, F, Fut>(
    idem: &Idem,
    call: &Finished,
    attempt: u64,
    body: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    E: From<Error> + Display,
    P: ErrorPolicy<E>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let inner = &idem.inner;
    let store = &*inner.store;
    let aref = AttemptRef {
        op: &call.op,
        key: &call.key,
        attempt,
    };
    let info = CallInfo {
        op: call.op.clone(),
        key: call.key,
        attempt,
    };
    let guarded = AssertUnwindSafe(with_current(info, body())).catch_unwind();
    let ttl = call.options.ttl;
    let result = match run_with_heartbeat(store, &aref, &call.options, guarded).await {
        Ok(result) => result,
        Err(panic) => {
            let error = format!("panicked: {}", panic_message(&*panic));
            if let Err(e) = complete(idem, &aref, Outcome::Failed { error: &error, ttl }).await {
                tracing::error!(error = %e, "idem: could not record the panic; the lease will expire");
            }
            outcome(&call.op, "panicked");
            std::panic::resume_unwind(panic);
        }
    };

    let (kind, bytes) = match &result {
        Ok(value) => match serde_json::to_vec(value) {
            Ok(bytes) => (SnapshotKind::Ok, bytes),
            Err(source) => {
                let err = Error::SnapshotEncode {
                    op: call.op.to_string(),
                    key: call.key,
                    source,
                };
                return fail_with(idem, &call.op, &aref, ttl, err).await;
            }
        },
        Err(err) => match P::encode(err) {
            Some(Ok(bytes)) => (SnapshotKind::Err, bytes),
            Some(Err(e)) => {
                let text = format!("{err} (not recorded: the error cannot be encoded: {e})");
                return fail(idem, &call.op, &aref, &text, ttl, result).await;
            }
            None => {
                let text = err.to_string();
                return fail(idem, &call.op, &aref, &text, ttl, result).await;
            }
        },
    };
    if bytes.len() > inner.max_snapshot_bytes {
        let err = Error::SnapshotTooLarge {
            op: call.op.to_string(),
            key: call.key,
            size: bytes.len(),
            limit: inner.max_snapshot_bytes,
        };
        return fail_with(idem, &call.op, &aref, ttl, err).await;
    }

    // A forget pushed between this completion's commit and the cache insert must win.
    let epoch = inner.cache.as_ref().map_or(0, |c| c.epoch());
    match complete(
        idem,
        &aref,
        Outcome::Snapshot {
            kind,
            bytes: &bytes,
            ttl,
        },
    )
    .await
    {
        Ok(Fence::Owned) => {
            if let Some(cache) = &inner.cache {
                let snapshot = Snapshot {
                    attempt,
                    kind,
                    bytes,
                    expires_at: now_millis().saturating_add(millis(ttl)),
                    fingerprint: call.fingerprint,
                };
                cache.insert_read_at(epoch, call.key, snapshot);
            }
            result
        }
        Ok(Fence::Lost) => converge::<T, E, P>(idem, call, attempt, result).await,
        Err(error) => {
            // The side effect happened but could not be recorded, even after retries. The
            // caller still gets the real result; the record stays `running` until its lease
            // expires, after which another call may run the body again (at-least-once).
            outcome(&call.op, "unrecorded");
            tracing::error!(%error, "idem: the outcome could not be recorded; a later call may run the body again");
            result
        }
    }
}

/// Records a failure and returns `result`; a fenced failure converges like a fenced success.
#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
async fn fail<T, E>(
    idem: &Idem,
    op: &std::borrow::Cow<'static, str>,
    aref: &AttemptRef<'_>,
    error: &str,
    ttl: Duration,
    result: Result<T, E>,
) -> Result<T, E> {
    outcome(op, "failed");
    match complete(idem, aref, Outcome::Failed { error, ttl }).await {
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "idem: could not record the failure; the lease will expire")
        }
    }
    result
}

/// Records idem's own error as the attempt's failure and returns it.
#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
async fn fail_with<T, E: From<Error>>(
    idem: &Idem,
    op: &Cow<'static, str>,
    aref: &AttemptRef<'_>,
    ttl: Duration,
    err: Error,
) -> Result<T, E> {
    let text = err.to_string();
    fail(idem, op, aref, &text, ttl, Err(err.into())).await
}

/// The fenced completion, retried with backoff while the store is unreachable.
async fn complete(
    idem: &Idem,
    aref: &AttemptRef<'_>,
    outcome: Outcome<'_>,
) -> Result<Fence, Error> {
    let store = &*idem.inner.store;
    (|| store.complete(aref, outcome))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(20))
                .with_max_delay(Duration::from_secs(1))
                .with_max_times(6)
                .with_jitter(),
        )
        .when(Error::is_store_failure)
        .notify(|error, pause| {
            tracing::warn!(%error, ?pause, "idem: recording the outcome failed; retrying");
        })
        .await
}

/// A fenced attempt (taken over while it ran) returns what the key's owner recorded, so every
/// caller of a key sees one outcome. If the owner recorded nothing (it failed), the attempt's
/// own result is all there is.
async fn converge<T, E, P>(
    idem: &Idem,
    call: &Finished,
    attempt: u64,
    own: Result<T, E>,
) -> Result<T, E>
where
    T: DeserializeOwned,
    E: From<Error>,
    P: ErrorPolicy<E>,
{
    outcome(&call.op, "fenced");
    tracing::warn!(
        attempt,
        "idem: this attempt was fenced; converging on the recorded outcome"
    );
    let store = &*idem.inner.store;
    let started = Instant::now();
    loop {
        let record = match store.get(&call.key).await {
            Ok(Some(record)) => record,
            Ok(None) | Err(_) => return own,
        };
        match record.status {
            Status::Completed if record.expires_at.is_some_and(|e| e > now_millis()) => {
                let (Some(bytes), Some(kind)) = (record.snapshot, record.snapshot_kind) else {
                    return own;
                };
                let snapshot = Snapshot {
                    attempt: record.attempt,
                    kind,
                    bytes,
                    expires_at: record.expires_at.unwrap_or(i64::MAX),
                    fingerprint: record.fingerprint,
                };
                return decode::<T, E, P>(call, &snapshot);
            }
            Status::Running if record.attempt > attempt => {
                let elapsed = started.elapsed();
                if elapsed >= call.options.wait {
                    return Err(Error::InProgress {
                        op: call.op.to_string(),
                        key: call.key,
                        attempt: record.attempt,
                        waited: elapsed,
                    }
                    .into());
                }
                let pause = MAX_POLL.min(call.options.wait - elapsed);
                store.wait_for_change(&call.key, pause).await;
            }
            _ => return own,
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}
