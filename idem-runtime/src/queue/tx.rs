//! Consumers whose handler writes in a transaction of the store's database: the claim, the
//! writes and the outcome commit together ([`Idem::step`]), so a consumer killed at any instant
//! leaves a message's whole effect or none of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;

use super::process::{settle, Ran, Runner};
use super::recording;
use crate::call::Call;
use crate::call_error::CallError;
use crate::error::Error;
use crate::idem::Idem;
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

/// A runner that runs `handler` as a step in a transaction of `pool`, then commits.
pub(crate) fn step_runner<P, T, R, E, F>(idem: Idem, pool: P, handler: F) -> Runner<T>
where
    P: TxPool,
    T: Send + 'static,
    R: serde::Serialize + DeserializeOwned + Send + Sync + 'static,
    E: std::fmt::Display + Send + Sync + 'static,
    F: for<'c> Fn(&'c mut P::Tx, T) -> BoxFuture<'c, Result<R, E>> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |call: Call, value: T| {
        let idem = idem.clone();
        let pool = pool.clone();
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            let ran = AtomicBool::new(false);
            let step = async {
                let mut tx = pool.begin_tx().await.map_err(Error::from)?;
                let value = idem
                    .step(call, &mut tx, |tx| {
                        ran.store(true, Ordering::Relaxed);
                        body_error(handler(tx, value))
                    })
                    .await?;
                P::commit_tx(tx).await.map_err(Error::from)?;
                Ok::<R, StepError<E>>(value)
            };
            let (result, unrecorded) = recording::watch(step).await;
            let result = result.map_err(|e| match e {
                StepError::Body(e) => CallError::Body(e),
                StepError::Idem(e) => CallError::Idem(e),
            });
            settle(result, unrecorded, ran.load(Ordering::Relaxed))
        }) as BoxFuture<'static, Ran>
    })
}
