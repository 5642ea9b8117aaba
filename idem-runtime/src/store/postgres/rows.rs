//! Reading the PostgreSQL store's rows back: what the claim statements decided, records and
//! attempts-log lines, each value checked (a bad one is `Error::Corrupt`, never a panic).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::Error;
use crate::key::Key;
use crate::record::Status;
use crate::store::columns::{fingerprint_of, u64_of};
use crate::store::decide::{judge, Clock, Found};
use crate::store::{millis, Claim, ClaimRequest};

/// What the insert of a key without a record (`claim_new`) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// It inserted the record: the caller owns this attempt.
    Acquired(u64),
    /// The key has a record: run the claim statement.
    HasRecord,
    /// The insert waited for another transaction's row longer than the lock timeout
    /// (`locks.rs`): an attempt is under way.
    Locked,
}

/// What the claim statement found.
#[derive(Debug)]
pub(crate) enum ClaimRead {
    /// The key has no record: insert it (`claim_new`).
    NoRecord,
    /// The record changed under the statement: run it again.
    Changed,
    /// The decision. `waiters`: the running attempt (if any) already has waiters flagged.
    Decided { claim: Claim, waiters: bool },
    /// The statement waited for the record's row lock longer than the lock timeout
    /// (`locks.rs`): an attempt is under way.
    Locked,
}

/// Either claim statement with its parameters: $1 key, $2 op, $3 fingerprint, $4 lease ms,
/// $5 worker, $6 ttl ms.
pub(super) fn claim_query<'q>(
    sql: &'q str,
    req: &ClaimRequest<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(&req.key.0[..])
        .bind(req.op)
        .bind(req.fingerprint.map(|f| &f.0[..]))
        .bind(millis(req.lease))
        .bind(req.worker)
        .bind(millis(req.ttl))
}

/// Binds the parent link of a new record (`claim_new`, `claim_new_step`): its key and position.
pub(super) fn bind_parent<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    req: &ClaimRequest<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(req.parent.map(|p| p.key.0.to_vec()))
        .bind(req.parent.map(|p| i64::from(p.position)))
}

/// The error of a claim statement's row that does not decode, naming the operation and key.
pub(super) fn claim_corrupt<'a>(req: &'a ClaimRequest<'_>) -> impl Fn(String) -> Error + 'a {
    move |reason| Error::Corrupt {
        op: req.op.to_owned(),
        key: *req.key,
        reason,
    }
}

pub(super) fn attempt_i64(attempt: u64) -> i64 {
    i64::try_from(attempt).unwrap_or(i64::MAX)
}

pub(super) fn col(e: sqlx::Error) -> String {
    e.to_string()
}

/// A `timestamptz` column as PostgreSQL sends it in binary: microseconds since 2000-01-01 UTC,
/// `i64::MAX` / `i64::MIN` for `'infinity'` / `'-infinity'`. Compared as they are, so the store
/// judges liveness exactly as the statement did (to the microsecond), and no value (an operator's
/// `'infinity'`, say) can overflow a date type.
pub(super) fn micros_of(row: &PgRow, column: &str) -> Result<Option<i64>, String> {
    row.try_get_unchecked::<Option<i64>, _>(column).map_err(col)
}

/// Microseconds since 2000-01-01 (PostgreSQL's epoch) as milliseconds since 1970-01-01.
pub(super) fn unix_millis(pg_micros: i64) -> i64 {
    const PG_EPOCH_UNIX_MILLIS: i64 = 946_684_800_000;
    (pg_micros / 1000).saturating_add(PG_EPOCH_UNIX_MILLIS)
}

/// Decodes the claim statement's row (a record that exists) into a decision. Liveness is
/// judged against the server's `now`, the same instant the statement judged it by.
pub(super) fn decide(req: &ClaimRequest<'_>, row: &PgRow) -> Result<ClaimRead, String> {
    if let Some(acquired) = row
        .try_get::<Option<Vec<i64>>, _>("acquired")
        .map_err(col)?
    {
        // `{attempt, taken-over attempt or 0}`, from `<prefix>acquire`.
        let [attempt, took_over] = acquired[..] else {
            return Err(format!("the acquire function returned {acquired:?}"));
        };
        return Ok(ClaimRead::Decided {
            claim: Claim::Acquired {
                attempt: u64_of(attempt, "attempt")?,
                took_over: (took_over != 0)
                    .then(|| u64_of(took_over, "taken_over_from"))
                    .transpose()?,
            },
            waiters: false,
        });
    }
    let found = Found {
        attempt: u64_of(row.try_get("attempt").map_err(col)?, "attempt")?,
        status: Status::from_str(&row.try_get::<String, _>("status").map_err(col)?)?,
        now: micros_of(row, "now")?.ok_or("the server's clock is NULL")?,
        expires_at: micros_of(row, "expires_at")?,
        lease_until: micros_of(row, "lease_until")?,
        fingerprint: fingerprint_of(row)?,
        snapshot: row.try_get("snapshot").map_err(col)?,
        snapshot_kind: row.try_get("snapshot_kind").map_err(col)?,
        cost: row.try_get("cost").map_err(col)?,
    };
    Ok(match judge(req, found, &MICROS)? {
        // The statement judged it claimable (by the same instant, to the microsecond) and
        // called `acquire`, which found a newer version that a concurrent claimer made live.
        None => ClaimRead::Changed,
        Some(claim) => {
            let waiters =
                matches!(claim, Claim::Running { .. }) && row.try_get("waiters").map_err(col)?;
            ClaimRead::Decided { claim, waiters }
        }
    })
}

/// PostgreSQL's clock, as [`micros_of`] reads it: microseconds since 2000-01-01.
const MICROS: Clock = Clock {
    tick: Duration::from_micros,
    unix_millis,
};

pub(super) fn corrupt(key: &Key) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Corrupt {
        op: String::new(),
        key: *key,
        reason,
    }
}
