//! Steps of a group in one transaction (a consumer's group commit): on PostgreSQL the claims
//! of its new keys go in one statement and their completions in one, so a group of n messages
//! costs n + 4 statements instead of 3n + 2. Keys that have a record (a redelivery's replay, a
//! run after a failure), a key twice in one group, and every key on another store claim and
//! complete as alone ([`super::run`]).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Conn, StepClaim};
use crate::call::KeyedCall;
use crate::error::Error;
use crate::handle::Handle;
#[cfg(feature = "postgres")]
use crate::{
    execute::snapshot_of,
    record::SnapshotKind,
    store::{AttemptRef, Outcome},
};

/// How a step of a group claims.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) enum GroupStep<T> {
    /// Claimed with the group's other new keys; complete it with [`complete_all`].
    Claimed(StepClaim<T>),
    /// Not claimed (the key has a record, is held by another step, or is in the group
    /// twice, or the store does not batch): the step claims and completes as alone.
    Alone(KeyedCall),
}

/// Claims, in one statement, those of `calls` whose key has no record (and is not held by
/// another step). Only PostgreSQL batches; on other stores every call is [`GroupStep::Alone`].
pub(crate) async fn claim_new<T>(
    handle: &Arc<Handle>,
    calls: Vec<KeyedCall>,
    conn: Conn<'_>,
) -> Result<Vec<GroupStep<T>>, Error> {
    #[cfg(feature = "postgres")]
    if let (Conn::Postgres(conn), Some(crate::store::SqlStore::Postgres(pg))) =
        (conn, handle.store.sql_store())
    {
        let requests: Vec<crate::store::ClaimRequest<'_>> = calls
            .iter()
            .map(|call| crate::store::ClaimRequest::of(call, &handle.worker))
            .collect();
        let started = std::time::Instant::now();
        let attempts = pg.claim_new_steps(conn, &requests).await;
        // Each claim of the group took the statement's time.
        let elapsed = started.elapsed();
        for _ in &requests {
            crate::metrics::claim(handle.store.backend(), elapsed, attempts.is_ok());
        }
        let attempts = attempts?;
        drop(requests);
        return Ok(calls
            .into_iter()
            .zip(attempts)
            .map(|(call, attempt)| match attempt {
                Some(attempt) => {
                    GroupStep::Claimed(StepClaim::acquired(handle, call, attempt, false))
                }
                None => GroupStep::Alone(call),
            })
            .collect());
    }
    #[cfg(not(feature = "postgres"))]
    let _ = (handle, conn);
    Ok(calls.into_iter().map(GroupStep::Alone).collect())
}

/// Completes, in one statement, the steps that [`claim_new`] claimed, with their values, in
/// their transaction. Every one must still own its attempt (inside its own transaction it
/// cannot lose it); else the group fails.
pub(crate) async fn complete_all<T: Serialize + DeserializeOwned>(
    done: Vec<(StepClaim<T>, T)>,
    conn: Conn<'_>,
) -> Result<(), Error> {
    let Some((first, _)) = done.first() else {
        return Ok(());
    };
    #[cfg(feature = "postgres")]
    if let (Conn::Postgres(conn), Some(crate::store::SqlStore::Postgres(pg))) =
        (conn, first.handle.store.sql_store())
    {
        return complete_on_postgres(pg, conn, &done).await;
    }
    #[cfg(not(feature = "postgres"))]
    let _ = conn;
    Err(Error::Config(format!(
        "idem: steps of operation `{}` were claimed together on another database than their \
         completion's",
        first.call.op
    )))
}

/// [`complete_all`] on PostgreSQL: one `complete_batch` statement.
#[cfg(feature = "postgres")]
async fn complete_on_postgres<T: Serialize + DeserializeOwned>(
    pg: &crate::store::postgres::PostgresStore,
    conn: &mut sqlx::PgConnection,
    done: &[(StepClaim<T>, T)],
) -> Result<(), Error> {
    let mut written = Vec::with_capacity(done.len());
    for (claim, value) in done {
        let bytes = snapshot_of(value, &claim.call, claim.handle.max_snapshot_bytes)
            .map_err(|(_, error)| error)?;
        let cost = claim.body.costs();
        if let Some(cost) = &cost {
            crate::metrics::cost_spent(&claim.call.op, cost);
        }
        written.push((bytes, cost));
    }
    let rows: Vec<(AttemptRef<'_>, Outcome<'_>)> = done
        .iter()
        .zip(&written)
        .map(|((claim, _), (bytes, cost))| {
            let attempt = AttemptRef {
                op: &claim.call.op,
                key: &claim.call.key,
                attempt: claim.attempt,
            };
            let outcome = Outcome::Snapshot {
                kind: SnapshotKind::Ok,
                bytes,
                ttl: claim.call.options.ttl,
                cost: cost.as_ref(),
            };
            (attempt, outcome)
        })
        .collect();
    let fences = pg.complete_steps(conn, &rows).await?;
    for ((claim, _), fence) in done.iter().zip(fences) {
        crate::store::step::still_owned(fence, &claim.call)?;
    }
    Ok(())
}
