//! The `Store` trait: the few atomic operations the life of a call needs, and its backends.
//!
//! Every backend must pass the conformance suite in `tests/` (package `idem-tests`).
//! The rules every implementation keeps:
//! - [`Store::claim`] is one atomic step: at most one caller gets [`Claim::Acquired`] for a given
//!   attempt number, and attempt numbers of a key only grow, even across `forget` and purge.
//! - [`Store::complete`] and [`Store::renew`] are fenced: they change the record only if it is
//!   still `running` with the caller's attempt number.
//! - Lease times come from the store's clock (the server's, for PostgreSQL and Redis), never the
//!   caller's.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod columns;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod decide;
pub mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod predict;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod step;
mod url;

use std::time::Duration;

use async_trait::async_trait;

pub use self::url::{open, open_existing, redact_url};
use crate::error::Error;
use crate::key::{Fingerprint, Key};
use crate::record::{AttemptLog, Costs, Record, Snapshot, Status};

/// What a caller asks for when it claims a key.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// The operation name.
    pub op: &'a str,
    /// The key.
    pub key: &'a Key,
    /// The payload fingerprint, if the operation verifies one.
    pub fingerprint: Option<&'a Fingerprint>,
    /// How long the lease of a new attempt lasts before a heartbeat must renew it.
    pub lease: Duration,
    /// How long the outcome will replay once recorded. A store may set a provisional expiry at
    /// claim time from it (PostgreSQL does, so that most completions leave every indexed
    /// column unchanged).
    pub ttl: Duration,
    /// Who is asking (for the attempts log).
    pub worker: &'a str,
    /// The call whose body makes this one, and this call's position in it. A store records it
    /// when it creates the key's record (a record keeps the link it was created with), so
    /// [`Store::children`] can list a run's steps.
    pub parent: Option<ParentLink>,
}

/// Where a call was made: the key of the call whose body made it, and its position among that
/// body's steps (from 0, in the order they started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParentLink {
    /// The parent call's key.
    pub key: Key,
    /// The position among the parent's steps, from 0.
    pub position: u32,
}

impl<'a> ClaimRequest<'a> {
    /// What `worker` asks the store for when it claims the key of `call`.
    pub(crate) fn of(call: &'a crate::call::KeyedCall, worker: &'a str) -> Self {
        ClaimRequest {
            op: &call.op,
            key: &call.key,
            fingerprint: call.fingerprint.as_ref(),
            lease: call.options.lease,
            ttl: call.options.ttl,
            worker,
            parent: call.parent,
        }
    }
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns a new attempt and must run the body.
    Acquired {
        /// The new attempt number (the fencing token).
        attempt: u64,
        /// The attempt whose expired lease this one took over, if any.
        took_over: Option<u64>,
    },
    /// The key has a recorded outcome: replay it.
    Completed(Snapshot),
    /// Another attempt holds a live lease.
    Running {
        /// The attempt that holds it; 0 when its number cannot be read: an attempt whose claim
        /// is not committed yet (a transactional step's, whose transaction is open, or a claim
        /// the SQL stores found mid-commit). `lease_left` is then the caller's whole lease.
        attempt: u64,
        /// How long until its lease expires, unless renewed.
        lease_left: Duration,
    },
    /// The key is live with a different payload fingerprint.
    KeyReuse,
}

/// What an attempt records when its body ends.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// A value to replay (`Ok`, or `Err` under `cache_errors`) until `ttl` passes.
    Snapshot {
        /// Which side of the `Result`.
        kind: crate::record::SnapshotKind,
        /// The encoded value.
        bytes: &'a [u8],
        /// How long it replays.
        ttl: Duration,
        /// What the attempt cost, if its body reported any.
        cost: Option<&'a Costs>,
    },
    /// The body failed (or panicked); the next call runs again. The record is kept for `ttl`.
    Failed {
        /// The error text.
        error: &'a str,
        /// How long the failed record is kept before purge may delete it.
        ttl: Duration,
        /// What the attempt cost, if its body reported any.
        cost: Option<&'a Costs>,
    },
    /// The caller dropped the call while its body ran: the record becomes `failed` (the next
    /// call runs at once) and the attempt is logged `cancelled`.
    Cancelled {
        /// How long the failed record is kept before purge may delete it.
        ttl: Duration,
        /// What the attempt cost before it was dropped, if its body reported any.
        cost: Option<&'a Costs>,
    },
}

/// The error text of a record whose attempt was cancelled.
pub const CANCELLED: &str = "cancelled: the caller dropped the call before its body finished";

impl<'a> Outcome<'a> {
    /// What the attempt cost, if its body reported any.
    pub fn cost(&self) -> Option<&'a Costs> {
        match *self {
            Outcome::Snapshot { cost, .. }
            | Outcome::Failed { cost, .. }
            | Outcome::Cancelled { cost, .. } => cost,
        }
    }

    /// The error text a failed outcome records.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Failed { error, .. } => Some(error),
            Outcome::Cancelled { .. } => Some(CANCELLED),
            Outcome::Snapshot { .. } => None,
        }
    }
}

/// The column values a completion writes: the same for every SQL backend.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Clone)]
pub(crate) struct CompletionRow<'a> {
    pub(crate) status: &'static str,
    pub(crate) snapshot: Option<&'a [u8]>,
    pub(crate) snapshot_kind: Option<&'static str>,
    pub(crate) error: Option<&'a str>,
    pub(crate) ttl_ms: i64,
    pub(crate) attempt_outcome: &'static str,
    /// The attempt's cost, as persisted (JSON).
    pub(crate) cost: Option<String>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl<'a> From<Outcome<'a>> for CompletionRow<'a> {
    fn from(outcome: Outcome<'a>) -> Self {
        use crate::record::{AttemptOutcome, SnapshotKind};
        let cost = outcome.cost().filter(|c| !c.is_empty()).map(Costs::to_json);
        match outcome {
            Outcome::Snapshot {
                kind, bytes, ttl, ..
            } => CompletionRow {
                status: Status::Completed.as_str(),
                snapshot: Some(bytes),
                snapshot_kind: Some(kind.as_str()),
                error: None,
                ttl_ms: millis(ttl),
                attempt_outcome: match kind {
                    SnapshotKind::Ok => AttemptOutcome::Completed.as_str(),
                    SnapshotKind::Err => AttemptOutcome::Failed.as_str(),
                },
                cost,
            },
            Outcome::Failed { error, ttl, .. } => CompletionRow {
                status: Status::Failed.as_str(),
                snapshot: None,
                snapshot_kind: None,
                error: Some(error),
                ttl_ms: millis(ttl),
                attempt_outcome: AttemptOutcome::Failed.as_str(),
                cost,
            },
            Outcome::Cancelled { ttl, .. } => CompletionRow {
                status: Status::Failed.as_str(),
                snapshot: None,
                snapshot_kind: None,
                error: Some(CANCELLED),
                ttl_ms: millis(ttl),
                attempt_outcome: AttemptOutcome::Cancelled.as_str(),
                cost,
            },
        }
    }
}

/// One chunk of a streamed result, as a stream journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    /// When the producer yielded it, in milliseconds since the attempt's stream began (replay
    /// can keep the original pacing from it).
    pub offset_ms: u32,
    /// The chunk's JSON encoding.
    pub bytes: Vec<u8>,
}

/// A SQL store, as [`Store::sql_store`] exposes it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum SqlStore<'a> {
    /// The SQLite store.
    #[cfg(feature = "sqlite")]
    Sqlite(&'a sqlite::SqliteStore),
    /// The PostgreSQL store.
    #[cfg(feature = "postgres")]
    Postgres(&'a postgres::PostgresStore),
    /// Never built: keeps the lifetime used when no SQL store is enabled.
    #[doc(hidden)]
    Neither(std::marker::PhantomData<&'a ()>),
}

/// Cost a process avoided by replaying recorded outcomes of one operation, in one unit (see
/// [`Store::add_avoided`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AvoidedCost {
    /// The operation.
    pub op: String,
    /// The unit (`tokens`, `usd`, ...).
    pub unit: String,
    /// How much the replays avoided.
    pub amount: f64,
    /// How many replays avoided it.
    pub replays: u64,
}

/// One line of the cost ledger: what an operation spent and avoided in one unit (see
/// [`Store::costs`]).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct CostLine {
    /// The operation.
    pub op: String,
    /// The unit (`tokens`, `usd`, ...).
    pub unit: String,
    /// What its attempts cost, by the attempts logs of the records the store still keeps
    /// (every attempt, whatever its outcome: a failed model call is paid for too).
    pub spent: f64,
    /// What replays of its recorded outcomes avoided, as processes reported it
    /// ([`crate::Idem::flush_costs`], and every few seconds while a handle is used).
    pub avoided: f64,
    /// How many replays avoided it.
    pub replays: u64,
}

impl CostLine {
    /// An empty line for `op` and `unit`.
    pub fn new(op: &str, unit: &str) -> Self {
        Self {
            op: op.to_owned(),
            unit: unit.to_owned(),
            ..Self::default()
        }
    }
}

/// Identifies one attempt of one key, for fenced writes.
#[derive(Debug, Clone, Copy)]
pub struct AttemptRef<'a> {
    /// The operation name (for error messages).
    pub op: &'a str,
    /// The key.
    pub key: &'a Key,
    /// The attempt number the caller acquired.
    pub attempt: u64,
}

/// Whether a fenced write took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The attempt still owned the record; the write took effect.
    Owned,
    /// A later attempt owns the record (or it was released); nothing was written.
    Lost,
}

/// Which records `list` returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this operation.
    pub op: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only records last updated before this time.
    pub updated_before: Option<crate::record::Millis>,
    /// At most this many (newest first); `None` means the store's default of 1,000.
    pub limit: Option<u32>,
}

/// The records of one operation, counted by status (see [`Store::counts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpCounts {
    /// The operation.
    pub op: String,
    /// All its records.
    pub records: u64,
    /// Records whose status is `running`.
    pub running: u64,
    /// Running records whose lease has expired (their worker died; nobody called the key since).
    pub stuck: u64,
    /// Records whose status is `completed`.
    pub completed: u64,
    /// Records whose status is `failed`.
    pub failed: u64,
    /// Executions of the body: the sum of the records' attempt numbers.
    pub attempts: u64,
}

impl OpCounts {
    /// No records of `op` yet.
    pub fn new(op: &str) -> Self {
        Self {
            op: op.to_owned(),
            ..Self::default()
        }
    }
}

/// Hears of keys that changed in a store, whichever process changed them (see
/// [`Store::watch`]). The snapshot cache of every [`crate::Idem`] is one.
pub trait ChangeSink: Send + Sync + 'static {
    /// `key` was forgotten, released or completed; `None`: changes may have been missed (the
    /// feed reconnected), so nothing heard before can be trusted.
    fn changed(&self, key: Option<&Key>);
}

/// A durable home for records. One implementation per backend; see the module docs for the
/// rules every implementation must keep.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// A short name of the backend (`memory`, `sqlite`, `postgres`, `redis`).
    fn backend(&self) -> &'static str;

    /// Atomically decides what the caller does with a key: run a new attempt, replay, wait, or
    /// refuse (see [`Claim`]). A new attempt is logged in the attempts log; a taken-over one is
    /// logged as abandoned.
    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, Error>;

    /// Extends the lease of a running attempt by `lease` from now. Fenced.
    async fn renew(&self, attempt: &AttemptRef<'_>, lease: Duration) -> Result<Fence, Error>;

    /// Records the outcome of an attempt. Fenced: a lost attempt writes nothing, and its log line
    /// says `fenced`.
    async fn complete(
        &self,
        attempt: &AttemptRef<'_>,
        outcome: Outcome<'_>,
    ) -> Result<Fence, Error>;

    /// Waits until the key may have changed, or `max` passes. Backends that can push changes
    /// (memory, PostgreSQL LISTEN/NOTIFY) return early; others just sleep.
    async fn wait_for_change(&self, key: &Key, max: Duration) {
        let _ = key;
        tokio::time::sleep(max).await;
    }

    /// Whether [`Store::wait_for_change`] returns early when *another process* changes the key
    /// (PostgreSQL: LISTEN/NOTIFY). Callers of stores that cannot look again more often (every
    /// 50 ms at most) while they wait; within one process every store wakes waiters at once.
    fn wakes_waiters(&self) -> bool {
        false
    }

    /// Pushes the changes any process makes (forget, release, a completion someone waits for)
    /// to `sink` for as long as it lives, and returns whether this store can (PostgreSQL:
    /// LISTEN/NOTIFY). Stores that cannot return `false`; their callers rely on time bounds.
    fn watch(&self, sink: std::sync::Weak<dyn ChangeSink>) -> bool {
        let _ = sink;
        false
    }

    /// The SQL store behind this one, for steps that run on a caller's own connection (`None`:
    /// not a SQL store). Wrappers of a store forward it.
    fn sql_store(&self) -> Option<SqlStore<'_>> {
        None
    }

    /// Reads a record.
    async fn get(&self, key: &Key) -> Result<Option<Record>, Error>;

    /// The records made by `parent`'s body (see [`ClaimRequest::parent`]), in the order of their
    /// positions (a position called twice, by two runs of the body, lists every record made
    /// there), **without their snapshots**, as [`Store::list`] returns them.
    async fn children(&self, parent: &Key) -> Result<Vec<Record>, Error>;

    /// Reads a key's attempts log, oldest first.
    async fn attempts(&self, key: &Key) -> Result<Vec<AttemptLog>, Error>;

    /// Lists records, newest first, **without their snapshots**: `snapshot` is `None` in every
    /// listed record (a snapshot may be megabytes; listings never read it). Use [`Store::get`]
    /// for a record with its snapshot.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, Error>;

    /// Counts records by operation (only `op`'s, if given), without reading snapshots. The
    /// default implementation counts a listing of up to 1,000,000 records; the SQL stores
    /// aggregate in one statement, judging `stuck` by their own clock.
    async fn counts(&self, op: Option<&str>) -> Result<Vec<OpCounts>, Error> {
        let records = self
            .list(&ListFilter {
                op: op.map(str::to_owned),
                limit: Some(1_000_000),
                ..ListFilter::default()
            })
            .await?;
        let now = crate::record::now_millis();
        let mut by_op: std::collections::BTreeMap<&str, OpCounts> = Default::default();
        for r in &records {
            let c = by_op.entry(&r.op).or_insert_with(|| OpCounts::new(&r.op));
            c.records += 1;
            match r.status {
                Status::Running => c.running += 1,
                Status::Completed => c.completed += 1,
                Status::Failed => c.failed += 1,
            }
            if r.status == Status::Running && r.lease_until.is_some_and(|l| l < now) {
                c.stuck += 1;
            }
            c.attempts += r.attempt;
        }
        Ok(by_op.into_values().collect())
    }

    /// Adds cost avoided by replays to the store's ledger (one statement per call, whatever the
    /// number of lines; callers batch).
    async fn add_avoided(&self, avoided: &[AvoidedCost]) -> Result<(), Error>;

    /// The cost ledger, by operation (only `op`'s, if given) and unit, ordered by both: what
    /// the attempts of the records still kept cost, and what replays avoided.
    async fn costs(&self, op: Option<&str>) -> Result<Vec<CostLine>, Error>;

    /// Deletes a record and its attempts log, so the next call runs again. Attempt numbers still
    /// never go backwards. Returns whether a record existed.
    ///
    /// A record that is `running` with a live lease (by the store's clock) is not deleted unless
    /// `force`: forgetting it would let a second attempt run beside the live one. The check and
    /// the delete are one atomic decision; a refusal is [`Error::Running`].
    async fn forget(&self, key: &Key, force: bool) -> Result<bool, Error>;

    /// Appends chunks `first`, `first + 1`, ... to the stream journal of `attempt`, if the record
    /// is still `running` with that attempt (fenced: [`Fence::Lost`] writes nothing). Appending
    /// a chunk number that is already journaled leaves the journaled one (a retried append is
    /// harmless). The first append of an attempt (`first == 0`) also drops the chunks of the
    /// key's earlier attempts. Chunks are deleted with their record (forget, purge, expiry).
    /// Stores that can tell other processes (PostgreSQL) wake those following the stream.
    async fn append_chunks(
        &self,
        attempt: &AttemptRef<'_>,
        first: u64,
        chunks: &[StoredChunk],
    ) -> Result<Fence, Error>;

    /// Reads up to `limit` journaled chunks of `attempt`'s stream, in order, from chunk number
    /// `from` on. Fewer than `limit` means the journal has no more yet.
    async fn read_chunks(
        &self,
        key: &Key,
        attempt: u64,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredChunk>, Error>;

    /// How many chunks `attempt`'s stream journaled.
    async fn count_chunks(&self, key: &Key, attempt: u64) -> Result<u64, Error>;

    /// Marks a running attempt as failed (an operator's `release`), so the next call runs again
    /// without waiting for the lease. Returns whether a running record was released.
    async fn release(&self, key: &Key) -> Result<bool, Error>;

    /// Deletes up to `batch` expired records (completed or failed past `expires_at`, and running
    /// ones whose lease expired more than `abandoned_after` ago). Returns how many were deleted.
    /// Callers loop until it returns less than `batch`.
    async fn purge_expired(&self, batch: u32, abandoned_after: Duration) -> Result<u64, Error>;
}

/// How long a record an operator released (`idem release`) is kept before purge may delete it.
pub(crate) const RELEASED_TTL: Duration = Duration::from_secs(24 * 3600);

pub(crate) use crate::record::millis;
