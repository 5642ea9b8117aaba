//! What the SQL stores share when they read rows back: a column that must hold 32 bytes (a key,
//! a fingerprint), a count that must not be negative (an attempt number), an attempts-log line,
//! a record, a line of counts. A bad value is a reason string for `Error::Corrupt`, never a panic.

use sqlx::{ColumnIndex, Decode, Row, Type};

use std::str::FromStr;

use crate::key::{Fingerprint, Key};
use crate::record::{AttemptLog, AttemptOutcome, Costs, Record, SnapshotKind, Status};
use crate::store::{OpCounts, ParentLink};

/// The 32 bytes of a key or fingerprint column.
pub(crate) fn bytes32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], String> {
    <[u8; 32]>::try_from(bytes).map_err(|b| format!("{what} has {} bytes, not 32", b.len()))
}

/// A non-negative integer column (SQL integers are signed).
pub(crate) fn u64_of(v: i64, what: &str) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("{what} is negative ({v})"))
}

/// The `fingerprint` column: NULL, or 32 bytes.
pub(crate) fn fingerprint_of<'r, R>(row: &'r R) -> Result<Option<Fingerprint>, String>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get::<Option<Vec<u8>>, _>("fingerprint")
        .map_err(|e| e.to_string())?
        .map(|b| bytes32(b, "fingerprint").map(Fingerprint))
        .transpose()
}

/// A record: the columns of both stores' record listing (times in milliseconds since the Unix
/// epoch; `snapshot` may be NULL, as in listings).
pub(crate) fn record_of<'r, R>(row: &'r R) -> Result<Record, String>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
{
    let col = |e: sqlx::Error| e.to_string();
    let status: String = row.try_get("status").map_err(col)?;
    let kind: Option<String> = row.try_get("snapshot_kind").map_err(col)?;
    Ok(Record {
        key: Key(bytes32(row.try_get("key").map_err(col)?, "key")?),
        op: row.try_get("op").map_err(col)?,
        status: Status::from_str(&status)?,
        attempt: u64_of(row.try_get("attempt").map_err(col)?, "attempt")?,
        fingerprint: fingerprint_of(row)?,
        snapshot: row.try_get("snapshot").map_err(col)?,
        snapshot_kind: kind.as_deref().and_then(SnapshotKind::parse),
        error: row.try_get("error").map_err(col)?,
        lease_until: row.try_get("lease_until").map_err(col)?,
        worker: row.try_get("worker").map_err(col)?,
        created_at: row.try_get("created_at").map_err(col)?,
        updated_at: row.try_get("updated_at").map_err(col)?,
        expires_at: row.try_get("expires_at").map_err(col)?,
        parent: parent_of(row)?,
        cost: cost_of(row)?,
    })
}

/// The `cost` column: NULL, or a JSON object of unit to amount.
pub(crate) fn cost_of<'r, R>(row: &'r R) -> Result<Option<Costs>, String>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    let text: Option<String> = row.try_get("cost").map_err(|e| e.to_string())?;
    text.as_deref().map(Costs::from_json).transpose()
}

/// The `parent` and `position` columns: both NULL, or a 32-byte key and a position that fits
/// a `u32`.
fn parent_of<'r, R>(row: &'r R) -> Result<Option<ParentLink>, String>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
{
    let col = |e: sqlx::Error| e.to_string();
    let parent: Option<Vec<u8>> = row.try_get("parent").map_err(col)?;
    let position: Option<i64> = row.try_get("position").map_err(col)?;
    match (parent, position) {
        (None, _) => Ok(None),
        (Some(key), Some(position)) => Ok(Some(ParentLink {
            key: Key(bytes32(key, "parent")?),
            position: u32::try_from(position)
                .map_err(|_| format!("position {position} is out of range"))?,
        })),
        (Some(_), None) => Err("parent without a position".to_owned()),
    }
}

/// One line of the attempts log: the columns `attempt`, `worker`, `started_at`, `ended_at`
/// (milliseconds since the Unix epoch), `outcome`, `error`, `cost`.
pub(crate) fn attempt_log_of<'r, R>(row: &'r R) -> Result<AttemptLog, String>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    let col = |e: sqlx::Error| e.to_string();
    let outcome: String = row.try_get("outcome").map_err(col)?;
    Ok(AttemptLog {
        attempt: u64_of(row.try_get("attempt").map_err(col)?, "attempt")?,
        worker: row.try_get("worker").map_err(col)?,
        started_at: row.try_get("started_at").map_err(col)?,
        ended_at: row.try_get("ended_at").map_err(col)?,
        outcome: AttemptOutcome::parse(&outcome)
            .ok_or_else(|| format!("unknown attempt outcome `{outcome}`"))?,
        error: row.try_get("error").map_err(col)?,
        cost: cost_of(row)?,
    })
}

/// The counts of one operation, as both SQL stores' count statements return them:
/// `(op, records, running, stuck, completed, failed, attempts)`.
pub(crate) type CountsRow = (String, i64, i64, i64, i64, i64, i64);

/// [`OpCounts`] from a [`CountsRow`] (a negative count, which SQL cannot produce, reads as 0).
pub(crate) fn counts_of(row: CountsRow) -> OpCounts {
    let (op, records, running, stuck, completed, failed, attempts) = row;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    let mut c = OpCounts::new(&op);
    c.records = n(records);
    c.running = n(running);
    c.stuck = n(stuck);
    c.completed = n(completed);
    c.failed = n(failed);
    c.attempts = n(attempts);
    c
}
