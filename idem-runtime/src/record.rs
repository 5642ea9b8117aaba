//! What a store keeps per key (the record) and per attempt (the attempts log).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::key::{Fingerprint, Key};

/// Milliseconds since the Unix epoch, by the store's clock.
pub type Millis = i64;

/// The current time by this process's clock, in [`Millis`]. Stores with a server clock use
/// theirs instead.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// A duration in whole [`Millis`] (saturating), to add to or subtract from a record's times.
pub fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The state of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// An attempt owns the key; its lease says until when.
    Running,
    /// An attempt recorded its outcome; the snapshot replays until `expires_at`.
    Completed,
    /// The last attempt failed (or panicked, or was released); the next call runs again.
    Failed,
}

impl Status {
    /// The persisted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "running" => Ok(Status::Running),
            "completed" => Ok(Status::Completed),
            "failed" => Ok(Status::Failed),
            other => Err(format!("unknown status `{other}`")),
        }
    }
}

/// Which side of the body's `Result` a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotKind {
    /// The `Ok` value.
    Ok,
    /// The `Err` value (only with `cache_errors`).
    Err,
}

impl SnapshotKind {
    /// The persisted name.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Ok => "ok",
            SnapshotKind::Err => "err",
        }
    }

    /// Parses the persisted name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ok" => Some(SnapshotKind::Ok),
            "err" => Some(SnapshotKind::Err),
            _ => None,
        }
    }
}

/// What one attempt cost, by unit (`tokens`, `usd`, ...), as its body reported it with
/// [`CallInfo::add_cost`](crate::CallInfo::add_cost). Kept in the attempt's log line; a replay
/// of the recorded outcome counts it as avoided. Persisted as a JSON object (`{"tokens":
/// 1234.0}`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Costs(pub std::collections::BTreeMap<String, f64>);

impl Costs {
    /// Adds `amount` of `unit`.
    pub fn add(&mut self, unit: &str, amount: f64) {
        *self.0.entry(unit.to_owned()).or_insert(0.0) += amount;
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The persisted form: a JSON object of unit to amount.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Parses the persisted form.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("cost is not a JSON object of numbers: {e}"))
    }
}

impl Eq for Costs {}

/// A recorded outcome: what a completed key replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The attempt that recorded it.
    pub attempt: u64,
    /// `Ok` or `Err` value.
    pub kind: SnapshotKind,
    /// The encoded value (JSON, see `ARCHITECTURE.md`).
    pub bytes: Vec<u8>,
    /// When it stops replaying.
    pub expires_at: Millis,
    /// The fingerprint the key was claimed with.
    pub fingerprint: Option<Fingerprint>,
    /// What the attempt that recorded it cost (a replay avoids it).
    pub cost: Option<Costs>,
}

/// One row of the store: everything known about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: Key,
    /// The operation name.
    pub op: String,
    /// The state.
    pub status: Status,
    /// The fencing token: the number of the latest attempt. It only grows.
    pub attempt: u64,
    /// The payload fingerprint of the latest claim.
    pub fingerprint: Option<Fingerprint>,
    /// The recorded value, when completed.
    pub snapshot: Option<Vec<u8>>,
    /// Which side of the `Result` the snapshot holds.
    pub snapshot_kind: Option<SnapshotKind>,
    /// The error text of a failed attempt.
    pub error: Option<String>,
    /// Until when the running attempt owns the key.
    pub lease_until: Option<Millis>,
    /// The worker that made the latest attempt.
    pub worker: Option<String>,
    /// When the record was created.
    pub created_at: Millis,
    /// When the record last changed.
    pub updated_at: Millis,
    /// When a completed or failed record stops counting.
    pub expires_at: Option<Millis>,
    /// The call whose body made this record's first call, and its position there.
    pub parent: Option<crate::store::ParentLink>,
    /// What the latest attempt cost, once it ended (if its body reported any).
    pub cost: Option<Costs>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// Still running (or its worker vanished and nobody took over yet).
    Running,
    /// Recorded a snapshot.
    Completed,
    /// The body returned an error or panicked.
    Failed,
    /// Its lease expired and a later attempt took the key over.
    Abandoned,
    /// It finished after being taken over; its completion was rejected.
    Fenced,
    /// An operator released it (`idem release`).
    Released,
    /// Its caller dropped the call (a timeout, a cancelled task) while the body ran; the claim
    /// was released at once so the next call runs without waiting for the lease.
    Cancelled,
}

impl AttemptOutcome {
    /// The persisted name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Abandoned => "abandoned",
            AttemptOutcome::Fenced => "fenced",
            AttemptOutcome::Released => "released",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }

    /// Parses the persisted name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => AttemptOutcome::Running,
            "completed" => AttemptOutcome::Completed,
            "failed" => AttemptOutcome::Failed,
            "abandoned" => AttemptOutcome::Abandoned,
            "fenced" => AttemptOutcome::Fenced,
            "released" => AttemptOutcome::Released,
            "cancelled" => AttemptOutcome::Cancelled,
            _ => return None,
        })
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a key's attempts log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLog {
    /// The attempt number (fencing token).
    pub attempt: u64,
    /// The worker that ran it.
    pub worker: String,
    /// When it claimed the key.
    pub started_at: Millis,
    /// When it ended, if it did.
    pub ended_at: Option<Millis>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The error text, for failed attempts.
    pub error: Option<String>,
    /// What it cost, if its body reported any (see [`Costs`]).
    pub cost: Option<Costs>,
}
