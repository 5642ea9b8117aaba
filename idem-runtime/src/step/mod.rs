//! Steps in the caller's own transaction: the claim, the body's database writes and the
//! snapshot go through the caller's sqlx transaction (or connection), so they commit or roll
//! back together with everything else the caller does in it. idem adds no commit of its own.
//!
//! - `connection.rs`: what a step runs on ([`StepConnection`]: sqlx transactions and
//!   connections of SQLite and PostgreSQL).
//! - here: the claim and the completion on that connection, with the handle's cache, worker
//!   name, snapshot limit, metrics and waiting.

mod connection;
pub(crate) mod group;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

pub(crate) use self::connection::Conn;
pub use self::connection::StepConnection;
use crate::call::KeyedCall;
use crate::error::Error;
use crate::execute::{cached, outcome, snapshot_of, Cached, Errors};
use crate::handle::Handle;
use crate::key::Key;
use crate::metrics::CallOutcome;
use crate::record::SnapshotKind;
use crate::replay::{decode, ErrorPolicy};
use crate::store::step::still_owned;
use crate::store::{AttemptRef, Claim, ClaimRequest, Fence, Outcome, SqlStore};
use crate::wait::{Patience, POLL_CAP};

/// What [`Idem::begin_step`](crate::Idem::begin_step) found.
#[derive(Debug)]
// Returned once per step and matched at once: boxing the claim would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum StepStart<T> {
    /// The key has a recorded outcome: here it is. The caller's transaction was only read.
    Replayed(T),
    /// This call owns a new attempt, claimed inside the caller's transaction: do the writes on
    /// the same transaction, then [`StepClaim::complete`] it there and commit. Rolling the
    /// transaction back (or dropping it) undoes the claim with the writes.
    Claimed(StepClaim<T>),
}

/// A step's attempt, claimed inside the caller's transaction and not yet completed. Typed: it
/// completes with the type it was claimed for.
#[must_use = "complete the step in the same transaction, or the claim commits as a running attempt"]
pub struct StepClaim<T> {
    call: KeyedCall,
    attempt: u64,
    handle: Arc<Handle>,
    /// What the body counts (its steps and cost), shared with every `CallInfo` it sees.
    body: Arc<crate::context::BodyState>,
    /// The step's `idem.step` span: its body and completion run in it too.
    pub(crate) span: tracing::Span,
    value: PhantomData<fn(&T)>,
}

/// How the engine reaches the database connection inside a [`StepConnection`]: its
/// `step_conn`, taken where the bound is checked (so an annotated fn's wrong `tx` type is
/// reported once, at its argument).
pub(crate) type ConnOf<C> = for<'c> fn(&'c mut C) -> Conn<'c>;

/// A [`StepConnection`] with its [`ConnOf`].
pub(crate) fn conn_of<C: StepConnection + ?Sized>() -> ConnOf<C> {
    <C as connection::sealed::Sealed>::step_conn
}

/// [`StepStart`], with a replayed `Err` under `cache_errors`.
// Returned once per step and matched at once: boxing the claim would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Begun<T, E> {
    Replayed(Result<T, E>),
    Claimed(StepClaim<T>),
}

/// Claims `call` on the caller's connection: a replay (from the cache or the store), or a new
/// attempt; waits for a running one as its options say.
pub(crate) async fn begin<C, T, E, P>(
    handle: &Arc<Handle>,
    call: Result<KeyedCall, Error>,
    conn: &mut C,
    conn_of: ConnOf<C>,
    errors: &Errors<E, P>,
) -> Result<Begun<T, E>, E>
where
    C: ?Sized,
    T: DeserializeOwned,
    P: ErrorPolicy<E>,
{
    let call = call.map_err(errors.from_idem)?;
    let span = step_span(&call);
    claim_step(handle, call, conn, conn_of, errors, span.clone())
        .instrument(span)
        .await
}

/// The span of a step.
fn step_span(call: &KeyedCall) -> tracing::Span {
    tracing::info_span!(
        "idem.step",
        op = %call.op,
        key = %call.key.short(),
        attempt = tracing::field::Empty,
    )
}

async fn claim_step<C, T, E, P>(
    handle: &Arc<Handle>,
    call: KeyedCall,
    conn: &mut C,
    conn_of: ConnOf<C>,
    errors: &Errors<E, P>,
    span: tracing::Span,
) -> Result<Begun<T, E>, E>
where
    C: ?Sized,
    T: DeserializeOwned,
    P: ErrorPolicy<E>,
{
    if let Some(entry) = cached(handle, &call, Cached::Value).map_err(errors.from_idem)? {
        let replayed = decode(&call, &entry.snapshot, &errors.policy, errors.from_idem);
        return Ok(Begun::Replayed(replayed));
    }
    let mut patience = Patience::new(POLL_CAP);
    loop {
        let request = ClaimRequest::of(&call, &handle.worker);
        let epoch = handle.cache.as_ref().map_or(0, |c| c.epoch());
        let started = Instant::now();
        let claimed = claim(handle, conn_of(conn), &request).await;
        crate::metrics::claim(handle.store.backend(), started.elapsed(), claimed.is_ok());
        let Some(claimed) = claimed.map_err(errors.from_idem)? else {
            continue;
        };
        match claimed {
            Claim::Completed(snapshot) => {
                outcome(&call.op, CallOutcome::Replayed);
                crate::ledger::replayed(handle, &call.op, snapshot.cost.as_ref());
                let replayed = decode(&call, &snapshot, &errors.policy, errors.from_idem);
                if let Some(cache) = &handle.cache {
                    cache.insert_read_at(epoch, call.key, snapshot);
                }
                return Ok(Begun::Replayed(replayed));
            }
            Claim::KeyReuse => {
                outcome(&call.op, CallOutcome::KeyReuse);
                let error = crate::replay::key_reuse_read(&*handle.store, &call).await;
                return Err((errors.from_idem)(error));
            }
            Claim::Running {
                attempt,
                lease_left,
            } => match patience.pause(&call, attempt, lease_left) {
                Ok(pause) => tokio::time::sleep(pause).await,
                Err(e) => {
                    outcome(&call.op, CallOutcome::InProgress);
                    return Err((errors.from_idem)(e));
                }
            },
            Claim::Acquired { attempt, took_over } => {
                let claim = StepClaim::with_span(handle, call, attempt, took_over.is_some(), span);
                return Ok(Begun::Claimed(claim));
            }
        }
    }
}

/// The error of a step whose connection is another database than the handle's store.
fn mismatch(call: &ClaimRequest<'_>, conn: &str, store: &str) -> Error {
    Error::Config(format!(
        "idem: the step of operation `{}` runs on a {conn} connection, but the `Idem` handle's \
         store is {store}: a step's claim and snapshot go into the database of the caller's \
         transaction, so the handle must use that database (`Idem::open` with its URL, or the \
         store's `from_pool`)",
        call.op
    ))
}

/// One claim on the caller's connection. `None`: the record changed between SQLite's two
/// statements; claim again.
async fn claim(
    handle: &Handle,
    conn: Conn<'_>,
    request: &ClaimRequest<'_>,
) -> Result<Option<Claim>, Error> {
    let store = handle.store.sql_store();
    match conn {
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(conn) => match store {
            Some(SqlStore::Sqlite(_)) => crate::store::sqlite::claim_on(conn, request).await,
            _ => Err(mismatch(request, "SQLite", handle.store.backend())),
        },
        #[cfg(feature = "postgres")]
        Conn::Postgres(conn) => match store {
            Some(SqlStore::Postgres(pg)) => pg.claim_with(conn, request, true).await.map(Some),
            _ => Err(mismatch(request, "PostgreSQL", handle.store.backend())),
        },
        Conn::Neither(_) => Err(mismatch(request, "unknown", handle.store.backend())),
    }
}

impl<T> std::fmt::Debug for StepClaim<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepClaim")
            .field("op", &self.call.op)
            .field("key", &self.call.key)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl<T> StepClaim<T> {
    /// The claim of a new attempt, counted as executed (or taken over), in a new step span.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn acquired(
        handle: &Arc<Handle>,
        call: KeyedCall,
        attempt: u64,
        took_over: bool,
    ) -> Self {
        let span = step_span(&call);
        Self::with_span(handle, call, attempt, took_over, span)
    }

    fn with_span(
        handle: &Arc<Handle>,
        call: KeyedCall,
        attempt: u64,
        took_over: bool,
        span: tracing::Span,
    ) -> Self {
        let how = if took_over {
            CallOutcome::TakenOver
        } else {
            CallOutcome::Executed
        };
        outcome(&call.op, how);
        span.record("attempt", attempt);
        StepClaim {
            call,
            attempt,
            handle: handle.clone(),
            body: Arc::default(),
            span,
            value: PhantomData,
        }
    }

    /// The step's key (for an `Idempotency-Key` header, or a column of the rows it writes).
    pub fn key(&self) -> Key {
        self.call.key
    }

    /// This attempt's number (the fencing token).
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// What a body running this attempt sees through [`crate::current`].
    pub(crate) fn info(&self) -> crate::CallInfo {
        crate::CallInfo::new(
            self.call.op.clone(),
            self.call.key,
            self.attempt,
            self.call.parent,
            crate::lease::LeaseSignal::default(),
            self.body.clone(),
        )
    }

    /// Records `value` as the step's snapshot, in the caller's transaction: it commits with the
    /// caller's writes. A value that cannot be recorded (over the handle's snapshot limit, not
    /// encodable, not decoding back) is an error here, so the caller rolls its writes back
    /// instead of committing writes that a later call would make again.
    pub async fn complete<C>(self, conn: &mut C, value: &T) -> Result<(), Error>
    where
        C: StepConnection + ?Sized,
        T: Serialize + DeserializeOwned,
    {
        self.complete_on(conn.step_conn(), value).await
    }

    /// [`StepClaim::complete`] on the database connection itself.
    pub(crate) async fn complete_on(self, conn: Conn<'_>, value: &T) -> Result<(), Error>
    where
        T: Serialize + DeserializeOwned,
    {
        let bytes = snapshot_of(value, &self.call, self.handle.max_snapshot_bytes)
            .map_err(|(_, error)| error)?;
        let ttl = self.call.options.ttl;
        let cost = self.body.costs();
        self.write(
            conn,
            Outcome::Snapshot {
                kind: SnapshotKind::Ok,
                bytes: &bytes,
                ttl,
                cost: cost.as_ref(),
            },
        )
        .await
    }

    /// Records the step as failed (the next call runs it again), in the caller's transaction.
    /// Only needed when the caller commits despite the failure: a rollback undoes the claim.
    pub async fn fail<C>(self, conn: &mut C, error: &str) -> Result<(), Error>
    where
        C: StepConnection + ?Sized,
    {
        self.fail_on(conn.step_conn(), error).await
    }

    /// [`StepClaim::fail`] on the database connection itself.
    pub(crate) async fn fail_on(self, conn: Conn<'_>, error: &str) -> Result<(), Error> {
        outcome(&self.call.op, CallOutcome::Failed);
        let ttl = self.call.options.ttl;
        let cost = self.body.costs();
        let cost = cost.as_ref();
        self.write(conn, Outcome::Failed { error, ttl, cost }).await
    }

    /// Records an error to replay (`cache_errors`), in the caller's transaction.
    pub(crate) async fn complete_with_error(
        self,
        conn: Conn<'_>,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let ttl = self.call.options.ttl;
        let cost = self.body.costs();
        self.write(
            conn,
            Outcome::Snapshot {
                kind: SnapshotKind::Err,
                cost: cost.as_ref(),
                bytes,
                ttl,
            },
        )
        .await
    }

    async fn write(self, conn: Conn<'_>, outcome: Outcome<'_>) -> Result<(), Error> {
        if let Some(cost) = outcome.cost() {
            crate::metrics::cost_spent(&self.call.op, cost);
        }
        let attempt = AttemptRef {
            op: &self.call.op,
            key: &self.call.key,
            attempt: self.attempt,
        };
        let fence = complete(&self.handle, conn, &attempt, outcome).await?;
        still_owned(fence, &self.call)
    }
}

/// The fenced completion on the caller's connection.
async fn complete(
    handle: &Handle,
    conn: Conn<'_>,
    attempt: &AttemptRef<'_>,
    outcome: Outcome<'_>,
) -> Result<Fence, Error> {
    match (conn, handle.store.sql_store()) {
        #[cfg(feature = "sqlite")]
        (Conn::Sqlite(conn), Some(SqlStore::Sqlite(_))) => {
            crate::store::sqlite::complete_on(conn, attempt, outcome).await
        }
        // A step's record is locked by the caller's transaction: nobody can be waiting on a
        // notification for it, so no NOTIFY follows.
        #[cfg(feature = "postgres")]
        (Conn::Postgres(conn), Some(SqlStore::Postgres(pg))) => pg
            .complete_on(conn, attempt, outcome)
            .await
            .map(|(fence, _)| fence),
        _ => Err(Error::Config(format!(
            "idem: the step of operation `{}` completes on another database than its store's",
            attempt.op
        ))),
    }
}

/// A whole step on the caller's connection: claim, then (for a new attempt) the body on the same
/// connection, then its outcome recorded there. Replays return without running the body.
pub(crate) async fn run<C, T, E, P, F>(
    handle: &Arc<Handle>,
    call: Result<KeyedCall, Error>,
    conn: &mut C,
    conn_of: ConnOf<C>,
    errors: Errors<E, P>,
    body: F,
) -> Result<T, E>
where
    C: ?Sized,
    T: Serialize + DeserializeOwned,
    E: std::fmt::Display,
    P: ErrorPolicy<E>,
    F: for<'c> FnOnce(&'c mut C) -> futures_util::future::BoxFuture<'c, Result<T, E>>,
{
    let claim = match begin(handle, call, conn, conn_of, &errors).await? {
        Begun::Replayed(replayed) => return replayed,
        Begun::Claimed(claim) => claim,
    };
    let result = crate::context::with_current(claim.info(), body(conn))
        .instrument(claim.span.clone())
        .await;
    finish(claim, conn_of(conn), &errors, result).await
}

/// Records a claimed step's result on the caller's connection: the value, a recorded error
/// (`cache_errors`), or the failure; returns the result, or the error that kept it from being
/// recorded (the caller then rolls back).
pub(crate) async fn finish<T, E, P>(
    claim: StepClaim<T>,
    conn: Conn<'_>,
    errors: &Errors<E, P>,
    result: Result<T, E>,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    E: std::fmt::Display,
    P: ErrorPolicy<E>,
{
    let span = claim.span.clone();
    // `None`: a failure was recorded as well as it could be; the body's error stands.
    let recorded = async {
        match &result {
            Ok(value) => Some(claim.complete_on(conn, value).await),
            Err(err) => {
                let limit = claim.handle.max_snapshot_bytes;
                match crate::execute::error_snapshot(err, &claim.call, limit, &errors.policy) {
                    Some(bytes) => Some(claim.complete_with_error(conn, &bytes).await),
                    // A failed body's caller normally rolls back, which undoes the claim; a
                    // failure that cannot be written (PostgreSQL: the body's own SQL error
                    // aborted the transaction) changes nothing then.
                    None => {
                        let _ = claim.fail_on(conn, &err.to_string()).await;
                        None
                    }
                }
            }
        }
    }
    .instrument(span)
    .await;
    match recorded {
        Some(Err(e)) => Err((errors.from_idem)(e)),
        Some(Ok(())) | None => result,
    }
}
