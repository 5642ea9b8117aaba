//! Reading the SQLite store's rows back: what the claim statements decided, and records, each
//! value checked (a bad one is `Error::Corrupt`, never a panic).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::key::Fingerprint;
use crate::record::{Snapshot, SnapshotKind, Status};
use crate::store::columns::{bytes32, u64_of};
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
    let now: i64 = row.try_get("now").map_err(col)?;
    let status: String = row.try_get("status").map_err(col)?;
    let status = Status::from_str(&status)?;
    let expires_at: Option<i64> = row.try_get("expires_at").map_err(col)?;
    let lease_until: Option<i64> = row.try_get("lease_until").map_err(col)?;
    let live_completed = status == Status::Completed && expires_at.is_some_and(|e| e > now);
    let live_running = status == Status::Running && lease_until.is_some_and(|l| l > now);
    if !live_completed && !live_running {
        // Became claimable (lease or TTL ran out) between the two statements.
        return Ok(None);
    }
    let fingerprint = row
        .try_get::<Option<Vec<u8>>, _>("fingerprint")
        .map_err(col)?
        .map(|b| bytes32(b, "fingerprint").map(Fingerprint))
        .transpose()?;
    if let (Some(have), Some(want)) = (fingerprint, req.fingerprint) {
        if have != *want {
            return Ok(Some(Claim::KeyReuse));
        }
    }
    if live_running {
        let left = u64::try_from(lease_until.unwrap_or(now) - now).unwrap_or(0);
        return Ok(Some(Claim::Running {
            attempt,
            lease_left: Duration::from_millis(left),
        }));
    }
    let bytes: Option<Vec<u8>> = row.try_get("snapshot").map_err(col)?;
    let kind: Option<String> = row.try_get("snapshot_kind").map_err(col)?;
    let kind = kind.as_deref().and_then(SnapshotKind::parse);
    let (Some(bytes), Some(kind)) = (bytes, kind) else {
        return Err("completed record without a snapshot".into());
    };
    Ok(Some(Claim::Completed(Snapshot {
        attempt,
        kind,
        bytes,
        expires_at: expires_at.unwrap_or(i64::MAX),
        fingerprint,
    })))
}
