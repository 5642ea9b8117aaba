//! What a claim decides when the key already has a record: both SQL stores read the record's
//! columns in their own units and this one judgement turns them into a [`Claim`], so the two
//! cannot drift apart on liveness, key reuse or what a completed record must hold.

use std::time::Duration;

use crate::key::Fingerprint;
use crate::record::{Costs, Snapshot, SnapshotKind, Status};
use crate::store::{Claim, ClaimRequest};

/// The record a claim statement found, its times in the store's clock unit.
pub(crate) struct Found {
    pub(crate) attempt: u64,
    pub(crate) status: Status,
    /// The store's clock when the statement ran: liveness is judged by the same instant.
    pub(crate) now: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) lease_until: Option<i64>,
    pub(crate) fingerprint: Option<Fingerprint>,
    pub(crate) snapshot: Option<Vec<u8>>,
    pub(crate) snapshot_kind: Option<String>,
    /// The `cost` column (JSON), replayed as what a replay avoids.
    pub(crate) cost: Option<String>,
}

/// A store's clock unit: how long one tick is, and a time in ticks as Unix milliseconds (what
/// [`Snapshot::expires_at`] holds).
pub(crate) struct Clock {
    pub(crate) tick: fn(u64) -> Duration,
    pub(crate) unix_millis: fn(i64) -> i64,
}

/// The decision for an existing record, or `None` when it is neither a live completion nor a
/// live lease: the statement saw it claimable, yet did not acquire it (another caller changed
/// it in between), so the claim runs again.
pub(crate) fn judge(
    req: &ClaimRequest<'_>,
    found: Found,
    clock: &Clock,
) -> Result<Option<Claim>, String> {
    let Found {
        attempt,
        status,
        now,
        expires_at,
        lease_until,
        fingerprint,
        snapshot,
        snapshot_kind,
        cost,
    } = found;
    let live_completed = status == Status::Completed && expires_at.is_some_and(|e| e > now);
    let live_running = status == Status::Running && lease_until.is_some_and(|l| l > now);
    if !live_completed && !live_running {
        return Ok(None);
    }
    if let (Some(have), Some(want)) = (fingerprint, req.fingerprint) {
        if have != *want {
            return Ok(Some(Claim::KeyReuse));
        }
    }
    if live_running {
        let left = lease_until.map_or(0, |l| l.saturating_sub(now));
        return Ok(Some(Claim::Running {
            attempt,
            lease_left: (clock.tick)(u64::try_from(left).unwrap_or(0)),
        }));
    }
    let kind = snapshot_kind.as_deref().and_then(SnapshotKind::parse);
    let (Some(bytes), Some(kind)) = (snapshot, kind) else {
        return Err("completed record without a snapshot".into());
    };
    Ok(Some(Claim::Completed(Snapshot {
        attempt,
        kind,
        bytes,
        expires_at: expires_at.map_or(i64::MAX, clock.unix_millis),
        fingerprint,
        cost: cost.as_deref().map(Costs::from_json).transpose()?,
    })))
}
