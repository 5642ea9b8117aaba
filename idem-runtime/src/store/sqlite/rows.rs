//! Reading the SQLite store's rows back: what the claim statements decided, and records, each
//! value checked (a bad one is `Error::Corrupt`, never a panic).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::record::Status;
use crate::store::columns::{fingerprint_of, u64_of};
use crate::store::decide::{judge, Clock, Found};
use crate::store::{Claim, ClaimRequest};

/// Decodes the claim statements' rows into a decision, or `None` when the row changed between
/// the two statements and the claim must be retried.
pub(super) fn decide(req: &ClaimRequest<'_>, rows: &[SqliteRow]) -> Result<Option<Claim>, String> {
    // The INSERT's row (acquired) wins over the SELECT's (the row as it was).
    let Some(row) = rows
        .iter()
        .find(|r| r.try_get::<i64, _>("acquired").is_ok_and(|a| a == 1))
        .or_else(|| rows.first())
    else {
        // No row, and another caller inserted one first: retry.
        return Ok(None);
    };
    let col = |e: sqlx::Error| e.to_string();
    let attempt = u64_of(row.try_get::<i64, _>("attempt").map_err(col)?, "attempt")?;
    if row.try_get::<i64, _>("acquired").map_err(col)? == 1 {
        let took_over = row
            .try_get::<Option<i64>, _>("taken_over_from")
            .map_err(col)?
            .map(|a| u64_of(a, "taken_over_from"))
            .transpose()?;
        return Ok(Some(Claim::Acquired { attempt, took_over }));
    }
    let found = Found {
        attempt,
        status: Status::from_str(&row.try_get::<String, _>("status").map_err(col)?)?,
        now: row.try_get("now").map_err(col)?,
        expires_at: row.try_get("expires_at").map_err(col)?,
        lease_until: row.try_get("lease_until").map_err(col)?,
        fingerprint: fingerprint_of(row)?,
        snapshot: row.try_get("snapshot").map_err(col)?,
        snapshot_kind: row.try_get("snapshot_kind").map_err(col)?,
        cost: row.try_get("cost").map_err(col)?,
    };
    // `None`: it became claimable (lease or TTL ran out) between the two statements.
    judge(req, found, &MILLIS)
}

/// SQLite's clock: milliseconds since the Unix epoch.
const MILLIS: Clock = Clock {
    tick: Duration::from_millis,
    unix_millis: |ms| ms,
};
