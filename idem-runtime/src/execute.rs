//! The life of a call: cached replay, claim (replay / wait / take over / refuse), run the body
//! under a lease, record its outcome (fenced), and convergence of a fenced attempt.

use std::any::Any;
use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::attempt::{OwnedAttempt, Recording};
use crate::call::KeyedCall;
use crate::context::{with_current, CallInfo};
use crate::error::Error;
use crate::handle::Handle;
use crate::lease::{run_under_lease, Heartbeat, LeaseSignal, Ran};
use crate::metrics::{CallOutcome, Unrecorded};
use crate::record::{now_millis, Snapshot, SnapshotKind, Status};
use crate::replay::{decode, fingerprints_differ, key_reuse, key_reuse_read, ErrorPolicy};
use crate::store::{millis, Claim, ClaimRequest, Fence};
use crate::wait::{Patience, NOTIFIED_POLL_CAP, POLL_CAP};
use crate::waiters::Waiting;

/// How a call's errors are made and kept: `from_idem` turns idem's own errors into the call's
/// error type (`E::from`, or `CallError::Idem`), `policy` says which `Err` values are recorded.
#[derive(Debug)]
pub struct Errors<E, P> {
    pub(crate) from_idem: fn(Error) -> E,
    pub(crate) policy: P,
}

pub(crate) async fn run<T, E, P, F, Fut>(
    handle: &Arc<Handle>,
    call: Result<KeyedCall, Error>,
    errors: Errors<E, P>,
    body: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    E: Display,
    P: ErrorPolicy<E>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let call = call.map_err(errors.from_idem)?;
    let span = tracing::info_span!(
        "idem.call",
        op = %call.op,
        key = %call.key.short(),
        attempt = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    run_in_span(handle, call, errors, body)
        .instrument(span)
        .await
}

#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
pub(crate) fn outcome(op: &Cow<'static, str>, outcome: CallOutcome) {
    tracing::Span::current().record("outcome", outcome.as_str());
    crate::metrics::outcome(op, outcome);
}

async fn run_in_span<T, E, P, F, Fut>(
    handle: &Arc<Handle>,
    call: KeyedCall,
    errors: Errors<E, P>,
    body: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    E: Display,
    P: ErrorPolicy<E>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    if let Some(entry) = cached(handle, &call, Cached::Any).map_err(errors.from_idem)? {
        return decode(&call, &entry.snapshot, &errors.policy, errors.from_idem);
    }

    let cap = if handle.store.wakes_waiters() {
        NOTIFIED_POLL_CAP
    } else {
        POLL_CAP
    };
    let mut patience = Patience::new(cap);
    // Registered at the first `Running`: from then on every look at the store is made with a
    // wake-up already armed, so an attempt of this process that ends meanwhile wakes us at once.
    let mut waiting: Option<Waiting> = None;
    loop {
        let notify = waiting.as_ref().map(Waiting::notifier);
        let mut woken = pin!(notify.as_deref().map(Notify::notified));
        if let Some(woken) = woken.as_mut().as_pin_mut() {
            woken.enable();
        }
        let request = ClaimRequest::of(&call, &handle.worker);
        // A change pushed after this point may postdate what the claim reads: see `cache.rs`.
        let epoch = handle.cache.as_ref().map_or(0, |c| c.epoch());
        // Fail closed: no claim, no body.
        match claim(handle, &request).await.map_err(errors.from_idem)? {
            Claim::Completed(snapshot) => {
                let how = if waiting.is_some() {
                    CallOutcome::Waited
                } else {
                    CallOutcome::Replayed
                };
                outcome(&call.op, how);
                crate::ledger::replayed(handle, &call.op, snapshot.cost.as_ref());
                let decoded = decode(&call, &snapshot, &errors.policy, errors.from_idem);
                if let Some(cache) = &handle.cache {
                    cache.insert_read_at(epoch, call.key, snapshot);
                }
                return decoded;
            }
            Claim::KeyReuse => {
                outcome(&call.op, CallOutcome::KeyReuse);
                let error = key_reuse_read(&*handle.store, &call).await;
                return Err((errors.from_idem)(error));
            }
            Claim::Running {
                attempt,
                lease_left,
            } => {
                let pause = match patience.pause(&call, attempt, lease_left) {
                    Ok(pause) => pause,
                    Err(e) => {
                        outcome(&call.op, CallOutcome::InProgress);
                        return Err((errors.from_idem)(e));
                    }
                };
                match woken.as_pin_mut() {
                    // Look again at once, now with a wake-up armed.
                    None => waiting = Some(Waiting::on(call.key)),
                    Some(woken) => {
                        tokio::select! {
                            () = woken => {}
                            () = handle.store.wait_for_change(&call.key, pause) => {}
                        }
                    }
                }
            }
            Claim::Acquired { attempt, took_over } => {
                drop(waiting);
                tracing::Span::current().record("attempt", attempt);
                if let Some(old) = took_over {
                    outcome(&call.op, CallOutcome::TakenOver);
                    tracing::warn!(
                        old,
                        attempt,
                        "idem: took over an attempt whose lease expired"
                    );
                } else {
                    outcome(&call.op, CallOutcome::Executed);
                }
                return execute(handle, &call, attempt, errors, body).await;
            }
        }
    }
}

/// Which cached outcomes a call can replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cached {
    /// Whatever is cached for the key (an ordinary call).
    Any,
    /// A recorded value only (a step).
    Value,
    /// A recorded stream only, with its chunks.
    Stream,
}

/// The process cache's outcome of `call`, if it holds one of the kind `want`: checked against
/// the call's fingerprint (a mismatch is [`Error::KeyReuse`]) and counted as a cache replay.
pub(crate) fn cached(
    handle: &Handle,
    call: &KeyedCall,
    want: Cached,
) -> Result<Option<Arc<crate::cache::Entry>>, Error> {
    let Some(entry) = handle.cache.as_ref().and_then(|c| c.get(&call.key)) else {
        return Ok(None);
    };
    let fits = match want {
        Cached::Any => true,
        Cached::Value => entry.chunks.is_none(),
        Cached::Stream => entry.chunks.is_some(),
    };
    if !fits {
        return Ok(None);
    }
    if fingerprints_differ(
        entry.snapshot.fingerprint.as_ref(),
        call.fingerprint.as_ref(),
    ) {
        return Err(key_reuse(call));
    }
    tracing::Span::current().record("outcome", "replayed");
    crate::metrics::cache_replay(&call.op);
    crate::ledger::replayed(handle, &call.op, entry.snapshot.cost.as_ref());
    Ok(Some(entry))
}

/// One claim, timed for the metrics.
pub(crate) async fn claim(handle: &Handle, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
    let started = Instant::now();
    let claimed = handle.store.claim(request).await;
    crate::metrics::claim(handle.store.backend(), started.elapsed(), claimed.is_ok());
    claimed
}

/// Runs the body as attempt `attempt` and records its outcome.
async fn execute<T, E, P, F, Fut>(
    handle: &Arc<Handle>,
    call: &KeyedCall,
    attempt: u64,
    errors: Errors<E, P>,
    body: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    E: Display,
    P: ErrorPolicy<E>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let ttl = call.options.ttl;
    // From here until the outcome is written, dropping this future releases the claim (or
    // finishes the write): see `attempt.rs`.
    let counted = Arc::new(crate::context::BodyState::default());
    let mut owned = OwnedAttempt::new(
        handle.store.clone(),
        call.op.clone(),
        call.key,
        attempt,
        ttl,
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
    let heartbeat = call.options.heartbeat.then(|| Heartbeat {
        store: handle.store.clone(),
        op: call.op.clone(),
        key: call.key,
        attempt,
        lease: call.options.lease,
        signal,
    });
    let guarded = AssertUnwindSafe(with_current(info, body())).catch_unwind();
    let result = match run_under_lease(heartbeat, &call.options, guarded).await {
        Ran::Finished(Ok(result)) => result,
        Ran::Finished(Err(panic)) => {
            let error = format!("panicked: {}", panic_message(&*panic));
            if let (Err(e), _) = owned.record(Recording::Failed { error }).await {
                tracing::error!(error = %e, "idem: could not record the panic; the lease will expire");
            }
            outcome(&call.op, CallOutcome::Panicked);
            std::panic::resume_unwind(panic);
        }
        Ran::Aborted => {
            owned.settle();
            outcome(&call.op, CallOutcome::Aborted);
            tracing::warn!(
                attempt,
                "idem: this attempt lost its lease; its body was dropped (abort_on_lease_loss)"
            );
            return converge(handle, call, attempt, None, errors).await;
        }
    };

    let recording = match &result {
        Ok(value) => match snapshot_of(value, call, handle.max_snapshot_bytes) {
            Ok(bytes) => Recording::Snapshot {
                kind: SnapshotKind::Ok,
                bytes,
            },
            Err((why, error)) => {
                // The caller paid for this value: it gets it, whether or not it can be kept.
                outcome(&call.op, CallOutcome::Unrecorded(why));
                crate::queue::recording::note_unrecorded(
                    crate::queue::recording::Unrecorded::Result,
                );
                tracing::warn!(%error, "idem: the result is returned but not recorded; the next call runs again");
                let error = format!("not recorded: {error}");
                if let (Err(e), _) = owned.record(Recording::Failed { error }).await {
                    tracing::error!(error = %e, "idem: could not record why the result was not kept; the lease will expire");
                }
                return result;
            }
        },
        Err(err) => match error_snapshot(err, call, handle.max_snapshot_bytes, &errors.policy) {
            Some(bytes) => Recording::Snapshot {
                kind: SnapshotKind::Err,
                bytes,
            },
            None => Recording::Failed {
                error: err.to_string(),
            },
        },
    };
    let failed = matches!(recording, Recording::Failed { .. });

    // A forget pushed between this completion's commit and the cache insert must win.
    let epoch = handle.cache.as_ref().map_or(0, |c| c.epoch());
    match owned.record(recording).await {
        (Ok(Fence::Owned), recording) => {
            if failed {
                outcome(&call.op, CallOutcome::Failed);
            }
            if let (Some(cache), Some(Recording::Snapshot { kind, bytes })) =
                (&handle.cache, recording)
            {
                let snapshot = Snapshot {
                    attempt,
                    kind,
                    bytes,
                    expires_at: now_millis().saturating_add(millis(ttl)),
                    fingerprint: call.fingerprint,
                    cost: counted.costs(),
                };
                cache.insert_read_at(epoch, call.key, snapshot);
            }
            result
        }
        (Ok(Fence::Lost), _) => converge(handle, call, attempt, Some(result), errors).await,
        (Err(error), _) => {
            // The side effect happened but could not be recorded, even after retries. The
            // caller still gets the real result; the record stays `running` until its lease
            // expires, after which another call may run the body again (at-least-once).
            outcome(
                &call.op,
                CallOutcome::Unrecorded(Unrecorded::StoreUnreachable),
            );
            crate::queue::recording::note_unrecorded(crate::queue::recording::Unrecorded::Store);
            tracing::error!(%error, "idem: the outcome could not be recorded; a later call may run the body again");
            result
        }
    }
}

/// The snapshot of an `Ok` value, checked to be within the limit and to decode back (a float
/// NaN encodes as `null`, which would then never decode), or why it cannot be kept.
pub(crate) fn snapshot_of<T: Serialize + DeserializeOwned>(
    value: &T,
    call: &KeyedCall,
    limit: usize,
) -> Result<Vec<u8>, (Unrecorded, Error)> {
    let bytes = serde_json::to_vec(value).map_err(|source| {
        let error = Error::SnapshotEncode {
            op: call.op.to_string(),
            key: call.key,
            source,
        };
        (Unrecorded::Unencodable, error)
    })?;
    if bytes.len() > limit {
        let error = Error::SnapshotTooLarge {
            op: call.op.to_string(),
            key: call.key,
            size: bytes.len(),
            limit,
        };
        return Err((Unrecorded::TooLarge, error));
    }
    if let Err(source) = serde_json::from_slice::<T>(&bytes) {
        let error = Error::SnapshotDecode {
            op: call.op.to_string(),
            key: call.key,
            attempt: 0,
            source,
        };
        return Err((Unrecorded::Undecodable, error));
    }
    Ok(bytes)
}

/// The snapshot of an `Err` value the policy records (within the limit, decoding back), or
/// `None`: the error is then recorded as the attempt's failure text, and the next call retries.
pub(crate) fn error_snapshot<E: Display, P: ErrorPolicy<E>>(
    err: &E,
    call: &KeyedCall,
    limit: usize,
    policy: &P,
) -> Option<Vec<u8>> {
    let why = match policy.encode(err)? {
        Ok(bytes) if bytes.len() > limit => Unrecorded::TooLarge,
        Ok(bytes) => match policy.decode(&bytes) {
            Some(Ok(_)) => return Some(bytes),
            _ => Unrecorded::Undecodable,
        },
        Err(_) => Unrecorded::Unencodable,
    };
    // A failure the policy wanted to replay: it stays a plain failure, retried next time.
    outcome(&call.op, CallOutcome::Unrecorded(why));
    tracing::warn!(
        reason = why.as_str(),
        "idem: the error cannot be recorded for replay; the next call runs again"
    );
    None
}

/// A fenced attempt (its lease was lost while it ran) returns what the key's new owner
/// recorded, so every caller of a key sees one outcome. If the owner recorded nothing (it
/// failed), the attempt's own result is all there is (`None` when its body was aborted).
async fn converge<T, E, P>(
    handle: &Arc<Handle>,
    call: &KeyedCall,
    attempt: u64,
    own: Option<Result<T, E>>,
    errors: Errors<E, P>,
) -> Result<T, E>
where
    T: DeserializeOwned,
    P: ErrorPolicy<E>,
{
    if own.is_some() {
        outcome(&call.op, CallOutcome::Fenced);
        tracing::warn!(
            attempt,
            "idem: this attempt was fenced; converging on the recorded outcome"
        );
    }
    let lease_lost = || {
        Err((errors.from_idem)(Error::LeaseLost {
            op: call.op.to_string(),
            key: call.key,
            attempt,
        }))
    };
    let store = &*handle.store;
    let waiting = Waiting::on(call.key);
    // Reading the record does not ask the store to notify (PostgreSQL notifies only those a
    // claim told `running`), so across processes this looks again at most every 50 ms; within
    // this process the new owner's end wakes it at once.
    let mut patience = Patience::converging(POLL_CAP);
    loop {
        let woken = waiting.notifier();
        let mut woken = pin!(woken.notified());
        woken.as_mut().enable();
        let record = match store.get(&call.key).await {
            Ok(Some(record)) => record,
            Ok(None) | Err(_) => return own.unwrap_or_else(lease_lost),
        };
        match record.status {
            Status::Completed if record.expires_at.is_some_and(|e| e > now_millis()) => {
                let (Some(bytes), Some(kind)) = (record.snapshot, record.snapshot_kind) else {
                    return own.unwrap_or_else(lease_lost);
                };
                let snapshot = Snapshot {
                    attempt: record.attempt,
                    kind,
                    bytes,
                    expires_at: record.expires_at.unwrap_or(i64::MAX),
                    fingerprint: record.fingerprint,
                    cost: record.cost,
                };
                if own.is_none() {
                    // An aborted body's caller gets the new owner's outcome instead of paying.
                    crate::ledger::replayed(handle, &call.op, snapshot.cost.as_ref());
                }
                return decode(call, &snapshot, &errors.policy, errors.from_idem);
            }
            Status::Running if record.attempt > attempt => {
                let left = record
                    .lease_until
                    .map_or(0, |l| l.saturating_sub(now_millis()));
                let lease_left = std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0));
                let pause = match patience.pause(call, record.attempt, lease_left) {
                    Ok(pause) => pause,
                    // The new owner outlasted `wait`: this attempt's own result is all there is
                    // (a paid value is not thrown away for an `InProgress`).
                    Err(e) => return own.unwrap_or_else(|| Err((errors.from_idem)(e))),
                };
                tokio::select! {
                    () = woken => {}
                    () = store.wait_for_change(&call.key, pause) => {}
                }
            }
            _ => return own.unwrap_or_else(lease_lost),
        }
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}
