//! The life of a streaming call: one claim decides which stream the caller gets. A recorded
//! stream replays (from the cache or the store), a stream being generated is followed live, and
//! otherwise this call's attempt runs the body and generates it.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use super::{follow, owner, Streamed};
use crate::call::{KeyedCall, OnConflict};
use crate::error::Error;
use crate::execute::{cached, claim, outcome, Cached, Errors};
use crate::handle::Handle;
use crate::metrics::CallOutcome;
use crate::replay::{key_reuse_read, ErrorPolicy};
use crate::store::{Claim, ClaimRequest};
use crate::wait::{Patience, POLL_CAP};

pub(crate) async fn run<C, E, P, F, Fut>(
    handle: &Arc<Handle>,
    call: crate::call::Call,
    errors: Errors<E, P>,
    body: F,
) -> Result<Streamed<C, E>, E>
where
    C: Serialize + DeserializeOwned + Send + 'static,
    E: Display + Send + 'static,
    P: ErrorPolicy<E> + Send + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Streamed<C, E>, E>>,
{
    let call = call.keyed().map_err(errors.from_idem)?;
    let span = tracing::info_span!(
        "idem.stream",
        op = %call.op,
        key = %call.key.short(),
        attempt = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    run_in_span(handle, call, errors, body)
        .instrument(span)
        .await
}

async fn run_in_span<C, E, P, F, Fut>(
    handle: &Arc<Handle>,
    call: KeyedCall,
    errors: Errors<E, P>,
    body: F,
) -> Result<Streamed<C, E>, E>
where
    C: Serialize + DeserializeOwned + Send + 'static,
    E: Display + Send + 'static,
    P: ErrorPolicy<E> + Send + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Streamed<C, E>, E>>,
{
    if let Some(entry) = cached(handle, &call, Cached::Stream).map_err(errors.from_idem)? {
        let (snapshot, chunks) = (entry.snapshot.clone(), entry.chunks.clone());
        return Ok(follow::recorded(handle, call, snapshot, chunks, errors, 0));
    }
    let request = ClaimRequest::of(&call, &handle.worker);
    // A change pushed after this point may postdate what the claim reads: see `cache.rs`.
    let epoch = handle.cache.as_ref().map_or(0, |c| c.epoch());
    // Fail closed: no claim, no body.
    let mut patience = Patience::new(POLL_CAP);
    let claimed = loop {
        match claim(handle, &request).await.map_err(errors.from_idem)? {
            // An attempt not yet committed (a transactional step's, or a claim committing
            // right now: see `Claim::Running`) has no number to follow yet: look again, within
            // the call's `wait`.
            Claim::Running {
                attempt: 0,
                lease_left,
            } if call.options.on_conflict == OnConflict::Wait => {
                match patience.pause(&call, 0, lease_left) {
                    Ok(pause) => tokio::time::sleep(pause).await,
                    Err(e) => {
                        outcome(&call.op, CallOutcome::InProgress);
                        return Err((errors.from_idem)(e));
                    }
                }
            }
            claimed => break claimed,
        }
    };
    match claimed {
        Claim::Completed(snapshot) => {
            outcome(&call.op, CallOutcome::Replayed);
            crate::ledger::replayed(handle, &call.op, snapshot.cost.as_ref());
            Ok(follow::recorded(
                handle, call, snapshot, None, errors, epoch,
            ))
        }
        Claim::KeyReuse => {
            outcome(&call.op, CallOutcome::KeyReuse);
            Err((errors.from_idem)(
                key_reuse_read(&*handle.store, &call).await,
            ))
        }
        Claim::Running { attempt, .. } if call.options.on_conflict == OnConflict::Error => {
            outcome(&call.op, CallOutcome::InProgress);
            Err((errors.from_idem)(Error::InProgress {
                op: call.op.to_string(),
                key: call.key,
                attempt,
                waited: Duration::ZERO,
            }))
        }
        Claim::Running { attempt, .. } => {
            // Never a second generation: follow the one under way.
            outcome(&call.op, CallOutcome::Attached);
            tracing::Span::current().record("attempt", attempt);
            Ok(follow::live(handle, call, attempt, errors))
        }
        Claim::Acquired { attempt, took_over } => {
            tracing::Span::current().record("attempt", attempt);
            if let Some(old) = took_over {
                outcome(&call.op, CallOutcome::TakenOver);
                tracing::warn!(
                    old,
                    attempt,
                    "idem: took over a stream whose lease expired; generating it anew"
                );
            } else {
                outcome(&call.op, CallOutcome::Executed);
            }
            owner::start(handle, call, attempt, errors, body).await
        }
    }
}
