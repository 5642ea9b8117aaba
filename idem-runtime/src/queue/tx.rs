//! Consumers whose handler writes in a transaction of the store's database: the claim, the
//! writes and the outcome commit together ([`Idem::step`]), so a consumer killed at any instant
//! leaves a message's whole effect or none of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::group::GroupRunner;
use super::process::{settle, Ran, Runner};
use super::recording;
use crate::call::{Call, KeyedCall, OnConflict};
use crate::call_error::CallError;
use crate::error::Error;
use crate::idem::Idem;
use crate::step::group::{self, GroupStep};
use crate::step::StepConnection;

/// A sqlx pool a consumer opens its handlers' transactions on: `SqlitePool` (`BEGIN
/// IMMEDIATE`, so the claim never has to upgrade to the write lock) or `PgPool`.
#[async_trait::async_trait]
pub trait TxPool: Clone + Send + Sync + 'static {
    /// The transaction handed to the handler.
    type Tx: StepConnection + Send + 'static;
    /// Begins a transaction.
    async fn begin_tx(&self) -> Result<Self::Tx, sqlx::Error>;
    /// Commits it.
    async fn commit_tx(tx: Self::Tx) -> Result<(), sqlx::Error>;
}

#[cfg(feature = "sqlite")]
#[async_trait::async_trait]
impl TxPool for sqlx::SqlitePool {
    type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;
    async fn begin_tx(&self) -> Result<Self::Tx, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
    async fn commit_tx(tx: Self::Tx) -> Result<(), sqlx::Error> {
        tx.commit().await
    }
}

#[cfg(feature = "postgres")]
#[async_trait::async_trait]
impl TxPool for sqlx::PgPool {
    type Tx = sqlx::Transaction<'static, sqlx::Postgres>;
    async fn begin_tx(&self) -> Result<Self::Tx, sqlx::Error> {
        self.begin().await
    }
    async fn commit_tx(tx: Self::Tx) -> Result<(), sqlx::Error> {
        tx.commit().await
    }
}

/// A step's error: the handler's, or idem's (which includes the database's).
enum StepError<E> {
    Body(E),
    Idem(Error),
}

impl<E> From<Error> for StepError<E> {
    fn from(e: Error) -> Self {
        StepError::Idem(e)
    }
}

impl<E: std::fmt::Display> std::fmt::Display for StepError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Body(e) => e.fmt(f),
            StepError::Idem(e) => e.fmt(f),
        }
    }
}

/// The handler's future, its error marked as the body's.
fn body_error<'c, R: 'c, E: 'c>(
    fut: BoxFuture<'c, Result<R, E>>,
) -> BoxFuture<'c, Result<R, StepError<E>>> {
    Box::pin(async move { fut.await.map_err(StepError::Body) })
}

/// A step's outcome as a consumer sees it.
fn settle_step<R, E: std::fmt::Display>(
    result: Result<R, StepError<E>>,
    unrecorded: Option<recording::Unrecorded>,
    ran: bool,
) -> Ran {
    let result = result.map_err(|e| match e {
        StepError::Body(e) => CallError::Body(e),
        StepError::Idem(e) => CallError::Idem(e),
    });
    settle(result, unrecorded, ran)
}

/// Runs `handler` on `value` as the step `call` in the transaction `tx`: the step's result,
/// whether the engine left its value unrecorded, and whether the handler ran.
async fn run_step<Tx, T, R, E, F>(
    idem: &Idem,
    call: Result<KeyedCall, Error>,
    tx: &mut Tx,
    handler: &F,
    value: T,
) -> (Result<R, StepError<E>>, Option<recording::Unrecorded>, bool)
where
    Tx: StepConnection + Send,
    T: 'static,
    R: serde::Serialize + DeserializeOwned + 'static,
    E: std::fmt::Display + 'static,
    F: for<'c> Fn(&'c mut Tx, T) -> BoxFuture<'c, Result<R, E>>,
{
    let ran = AtomicBool::new(false);
    let step = idem.step_keyed(call, tx, |tx| {
        ran.store(true, Ordering::Relaxed);
        body_error(handler(tx, value))
    });
    let (result, unrecorded) = recording::watch(step).await;
    (result, unrecorded, ran.load(Ordering::Relaxed))
}

/// A runner that runs `handler` as a step in a transaction of `pool`, then commits.
pub(crate) fn step_runner<P, T, R, E, F>(idem: Idem, pool: P, handler: Arc<F>) -> Runner<T>
where
    P: TxPool,
    T: Send + 'static,
    R: serde::Serialize + DeserializeOwned + Send + Sync + 'static,
    E: std::fmt::Display + Send + Sync + 'static,
    F: for<'c> Fn(&'c mut P::Tx, T) -> BoxFuture<'c, Result<R, E>> + Send + Sync + 'static,
{
    Arc::new(move |call: Call, value: T| {
        let idem = idem.clone();
        let pool = pool.clone();
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            let mut tx = match pool.begin_tx().await {
                Ok(tx) => tx,
                Err(e) => return settle_step::<R, E>(Err(Error::from(e).into()), None, false),
            };
            let (result, unrecorded, ran) =
                run_step(&idem, call.keyed(), &mut tx, &*handler, value).await;
            let result = match result {
                Ok(value) => P::commit_tx(tx)
                    .await
                    .map(|()| value)
                    .map_err(|e| Error::from(e).into()),
                Err(e) => Err(e),
            };
            settle_step(result, unrecorded, ran)
        }) as BoxFuture<'static, Ran>
    })
}

/// A group runner (see `group.rs`) that runs `handler` as one step per message, all in one
/// transaction of `pool`, then commits once. The new keys are claimed together first and
/// completed together after their handlers (PostgreSQL; see `step/group.rs`); the other
/// messages (replays, a key twice) then run their steps one by one, after those completions,
/// so a key's second message in a group replays its first.
pub(crate) fn group_runner<P, T, R, E, F>(idem: Idem, pool: P, handler: Arc<F>) -> GroupRunner<T>
where
    P: TxPool,
    T: Send + 'static,
    R: serde::Serialize + DeserializeOwned + Send + Sync + 'static,
    E: std::fmt::Display + Send + Sync + 'static,
    F: for<'c> Fn(&'c mut P::Tx, T) -> BoxFuture<'c, Result<R, E>> + Send + Sync + 'static,
{
    Arc::new(move |calls: Vec<(Call, T)>| {
        let idem = idem.clone();
        let pool = pool.clone();
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            let conn_of = crate::step::conn_of::<P::Tx>();
            let mut tx = pool.begin_tx().await.map_err(|e| format!("begin: {e}"))?;
            // A key held by another consumer is not waited for inside the group (the group's
            // transaction would hold its other rows meanwhile): the group rolls back and the
            // message, alone, waits as usual.
            let (keyed, values): (Vec<_>, Vec<_>) = calls
                .into_iter()
                .map(|(call, value)| (call.on_conflict(OnConflict::Error).keyed(), value))
                .unzip();
            let keyed = keyed
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let steps = group::claim_new::<R>(&idem.inner, keyed, conn_of(&mut tx))
                .await
                .map_err(|e| e.to_string())?;
            let mut rans: Vec<Option<Ran>> = Vec::with_capacity(values.len());
            let mut claimed = Vec::new();
            let mut alone = Vec::new();
            for (i, (step, value)) in steps.into_iter().zip(values).enumerate() {
                rans.push(None);
                match step {
                    GroupStep::Claimed(claim) => {
                        let body = handler(&mut tx, value);
                        let result = crate::context::with_current(claim.info(), body)
                            .instrument(claim.span.clone())
                            .await;
                        // Dropping the transaction rolls the whole group back.
                        let value = result.map_err(|e| format!("a handler failed: {e}"))?;
                        claimed.push((claim, value));
                        rans[i] = Some(Ran::Executed);
                    }
                    GroupStep::Alone(call) => alone.push((i, call, value)),
                }
            }
            group::complete_all(claimed, conn_of(&mut tx))
                .await
                .map_err(|e| e.to_string())?;
            for (i, call, value) in alone {
                let (result, unrecorded, ran) =
                    run_step(&idem, Ok(call), &mut tx, &*handler, value).await;
                match settle_step(result, unrecorded, ran) {
                    done @ (Ran::Executed | Ran::Replayed) => rans[i] = Some(done),
                    Ran::Failed(e) => return Err(format!("a handler failed: {e}")),
                    Ran::NotRecorded(e) => return Err(e),
                }
            }
            // A commit that fails may still have committed (the connection broke after it
            // was sent): the messages, alone, then replay.
            P::commit_tx(tx).await.map_err(|e| format!("commit: {e}"))?;
            Ok(rans.into_iter().flatten().collect())
        }) as BoxFuture<'static, Result<Vec<Ran>, String>>
    })
}
