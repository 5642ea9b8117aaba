//! The embedded SQLite store (`sqlite://path`): one file, zero set-up, safe across processes.
//!
//! Each decision is one SQL statement, so it is atomic without a transaction: a claim is an
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE <claimable> RETURNING`, followed in the same
//! round trip by a read of the row for the callers that did not acquire it; completes and renews
//! are `UPDATE`s fenced on `(key, attempt, status = 'running')`. Multi-statement maintenance
//! (forget, release, purge) runs under `BEGIN IMMEDIATE`, so a read never turns into a write that
//! another process could beat. The statement functions take any `SqliteExecutor`, so a caller's
//! own transaction can carry them.

mod schema;
mod step;

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ConstantBuilder, Retryable};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteExecutor};

pub use self::schema::FORMAT_VERSION;
use self::schema::NOW;
pub use self::step::{Step, StepTx};
use super::columns::{attempt_log_of, bytes32, counts_of, u64_of};
use super::{
    millis, AttemptRef, Claim, ClaimRequest, CompletionRow, Fence, ListFilter, OpCounts, Outcome,
    Store,
};
use crate::error::Error;
use crate::key::{Fingerprint, Key};
use crate::record::{AttemptLog, Record, Snapshot, SnapshotKind, Status};

/// A [`Store`] on one SQLite file (WAL mode), shared safely by any number of processes.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// Options for opening a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    url: String,
    busy_timeout: Duration,
    max_connections: u32,
    migrate: bool,
}

impl SqliteStoreBuilder {
    /// How long a statement waits for another process's write lock before failing (default 5 s).
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The pool size (default 8). SQLite serializes writers; more connections help readers.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Whether opening creates the file and creates or upgrades the tables (default on). Off,
    /// opening creates and changes nothing (no file, no table, no journal-mode switch) and
    /// fails with [`Error::Open`] (`no idem tables in ...`) unless the file exists with this
    /// build's tables: for operators' tools, where a typo must not create an empty store.
    #[must_use]
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// Opens (creating the file if needed) and migrates the database; with
    /// [`Self::migrate`]`(false)`, opens an existing one as it is.
    pub async fn open(self) -> Result<SqliteStore, Error> {
        let url = super::redact_url(&self.url);
        let open_err = |reason: &str, e: sqlx::Error| Error::Open {
            url: url.clone(),
            reason: format!("{reason}: {e}"),
            source: Some(Box::new(e)),
        };
        let mut options = SqliteConnectOptions::from_str(&self.url)
            .map_err(|e| open_err("not a SQLite URL", e))?
            .create_if_missing(self.migrate)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(self.busy_timeout);
        // An empty path opens a new private temporary database per connection: every pooled
        // connection would see a different, empty store.
        if options.get_filename().as_os_str().is_empty() {
            return Err(Error::Open {
                url,
                reason: "no database file path: write `sqlite://path/to/idem.db` (created on \
                         first use), or `sqlite::memory:` or `memory:` for a store that lives \
                         only in this process"
                    .into(),
                source: None,
            });
        }
        if self.migrate {
            options = options.journal_mode(SqliteJournalMode::Wal);
        } else if !options.get_filename().exists()
            && !self.url.starts_with("sqlite::memory:")
            && !self.url.contains("mode=memory")
        {
            return Err(Error::Open {
                url,
                reason: format!(
                    "no idem tables in `{}`: the file does not exist",
                    options.get_filename().display()
                ),
                source: None,
            });
        }
        let file = options.get_filename().display().to_string();
        let pool_options = SqlitePoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(1)
            // A local file has no network to fail: skip the ping on every acquire.
            .test_before_acquire(false)
            .acquire_timeout(self.busy_timeout + Duration::from_secs(5));
        // Switching a new file to WAL needs an exclusive lock, and SQLite reports a concurrent
        // opener's lock at once (the busy handler does not cover it): retry within the busy
        // timeout, so many processes can create one file at the same moment.
        let attempts = (self.busy_timeout.as_millis() / 20).clamp(1, 1000) as usize;
        let pool = (|| pool_options.clone().connect_with(options.clone()))
            .retry(
                ConstantBuilder::default()
                    .with_delay(Duration::from_millis(20))
                    .with_max_times(attempts)
                    .with_jitter(),
            )
            .when(is_locked)
            .await
            .map_err(|e| open_err("cannot open the database", e))?;
        if !self.migrate {
            let found = async {
                let mut conn = pool.acquire().await?;
                schema::check(&mut conn).await
            }
            .await
            .map_err(|e| open_err("cannot read the database", e))?;
            return match found {
                Some(FORMAT_VERSION) => Ok(SqliteStore { pool }),
                Some(version) => Err(Error::Open {
                    url,
                    reason: format!(
                        "the idem tables in `{file}` have format version {version}, this build \
                         reads only {FORMAT_VERSION}; open it once with a build that migrates"
                    ),
                    source: None,
                }),
                None => Err(Error::Open {
                    url,
                    reason: format!("no idem tables in `{file}`"),
                    source: None,
                }),
            };
        }
        SqliteStore::from_pool(pool).await.map_err(|e| match e {
            Error::Store { source, .. } => Error::Open {
                url: url.clone(),
                reason: format!("cannot migrate the database: {source}"),
                source: Some(source),
            },
            other => other,
        })
    }
}

impl SqliteStore {
    /// Opens `url` (`sqlite://path/to/file.db`, `sqlite::memory:`) with default options.
    pub async fn open(url: &str) -> Result<Self, Error> {
        Self::builder(url).open().await
    }

    /// Options for opening `url`.
    pub fn builder(url: &str) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            url: url.to_owned(),
            busy_timeout: Duration::from_secs(5),
            max_connections: 8,
            migrate: true,
        }
    }

    /// Uses an application's existing pool, creating or upgrading the idem tables in it.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, Error> {
        let zero = Key([0; 32]);
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| Error::store("migrate", "", &zero, e))?;
        schema::migrate(&mut conn)
            .await
            .map_err(|e| Error::store("migrate", "", &zero, e))?;
        Ok(Self { pool })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Statement text, built once (it embeds the clock expression).
struct Sql {
    claim: String,
    renew: String,
    complete: String,
    fence_log: String,
    release: String,
    purge_expired: String,
    purge_abandoned: String,
}

fn sql() -> &'static Sql {
    static SQL: OnceLock<Sql> = OnceLock::new();
    SQL.get_or_init(|| {
        let live = format!(
            "((status = 'completed' AND expires_at > {NOW}) OR (status = 'running' AND lease_until > {NOW}))"
        );
        let released_ms = super::millis(super::RELEASED_TTL);
        Sql {
        // ?1 key, ?2 op, ?3 fingerprint, ?4 lease ms, ?5 worker. One round trip, two statements:
        // the SELECT reads the row as it was; the INSERT claims the key only if no live row
        // exists, and returns a row only when this caller acquired it. On a replay (the hot
        // path) the INSERT's `WHERE NOT EXISTS` stops it before the conflict machinery runs, so
        // a hit costs little more than the read. `op` is never in the SET list: it is fixed by
        // the key, and leaving it out keeps SQLite from rewriting the `op` index on reclaims.
        claim: format!(
            "SELECT 0 AS acquired, status, attempt, taken_over_from, fingerprint, snapshot,
                    snapshot_kind, expires_at, lease_until, {NOW} AS now, op
             FROM idem_records WHERE key = ?1;
             INSERT INTO idem_records (key, op, status, attempt, fingerprint, lease_until, worker,
                                       created_at, updated_at, attempt_started_at, attempt_outcome)
             SELECT ?1, ?2, 'running', (SELECT value FROM idem_meta WHERE name = 'attempt_floor') + 1,
                    ?3, {NOW} + ?4, ?5, {NOW}, {NOW}, {NOW}, 'running'
             WHERE NOT EXISTS (SELECT 1 FROM idem_records
                               WHERE key = ?1 AND {LIVE})
             ON CONFLICT (key) DO UPDATE SET
                 status = 'running',
                 attempt = max(attempt, excluded.attempt - 1) + 1,
                 taken_over_from = CASE WHEN status = 'running' THEN attempt END,
                 fingerprint = excluded.fingerprint,
                 snapshot = NULL, snapshot_kind = NULL, error = NULL,
                 lease_until = excluded.lease_until,
                 worker = excluded.worker,
                 updated_at = excluded.updated_at,
                 expires_at = NULL,
                 attempt_started_at = excluded.updated_at,
                 attempt_outcome = 'running'
             WHERE NOT ((status = 'completed' AND expires_at > excluded.updated_at)
                     OR (status = 'running' AND lease_until > excluded.updated_at))
             RETURNING 1 AS acquired, status, attempt, taken_over_from, fingerprint, snapshot,
                       snapshot_kind, expires_at, lease_until, updated_at AS now, op;",
            LIVE = live,
        ),
        renew: format!(
            "UPDATE idem_records SET lease_until = {NOW} + ?3
             WHERE key = ?1 AND attempt = ?2 AND status = 'running'"
        ),
        // ?1 key, ?2 attempt, ?3 status, ?4 snapshot, ?5 kind, ?6 error, ?7 ttl ms,
        // ?8 the attempt's outcome for the log.
        complete: format!(
            "UPDATE idem_records
             SET status = ?3, snapshot = ?4, snapshot_kind = ?5, error = ?6, lease_until = NULL,
                 updated_at = {NOW}, expires_at = {NOW} + ?7, attempt_outcome = ?8
             WHERE key = ?1 AND attempt = ?2 AND status = 'running'"
        ),
        fence_log: format!(
            "UPDATE idem_attempts SET outcome = 'fenced', ended_at = {NOW}, error = ?3
             WHERE key = ?1 AND attempt = ?2"
        ),
        release: format!(
            "UPDATE idem_records
             SET status = 'failed', error = 'released by an operator', lease_until = NULL,
                 updated_at = {NOW}, expires_at = {NOW} + {released_ms},
                 attempt_outcome = 'released'
             WHERE key = ?1 AND status = 'running'
             RETURNING attempt"
        ),
        // ?1 batch. Returns the deleted attempts, for the floor.
        purge_expired: format!(
            "DELETE FROM idem_records WHERE key IN (
                 SELECT key FROM idem_records WHERE expires_at <= {NOW} LIMIT ?1)
             RETURNING attempt"
        ),
        // ?1 batch, ?2 abandoned-after ms.
        purge_abandoned: format!(
            "DELETE FROM idem_records WHERE key IN (
                 SELECT key FROM idem_records
                 WHERE status = 'running' AND lease_until <= {NOW} - ?2 LIMIT ?1)
             RETURNING attempt"
        ),
        }
    })
}

/// SQLITE_BUSY or SQLITE_LOCKED (and their extended codes).
fn is_locked(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// Decodes the claim statements' rows into a decision, or `None` when the row changed between
/// the two statements and the claim must be retried.
fn decide(req: &ClaimRequest<'_>, rows: &[SqliteRow]) -> Result<Option<Claim>, String> {
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

/// Runs the claim statements on any executor (a pool, a connection, a caller's transaction).
pub(crate) async fn claim_on<'e>(
    exec: impl SqliteExecutor<'e>,
    req: &ClaimRequest<'_>,
) -> Result<Option<Claim>, Error> {
    let rows = sqlx::query(&sql().claim)
        .bind(&req.key.0[..])
        .bind(req.op)
        .bind(req.fingerprint.map(|f| &f.0[..]))
        .bind(millis(req.lease))
        .bind(req.worker)
        .fetch_all(exec)
        .await
        .map_err(|e| Error::store("claim", req.op, req.key, e))?;
    decide(req, &rows).map_err(|reason| Error::Corrupt {
        op: req.op.to_owned(),
        key: *req.key,
        reason,
    })
}

/// Runs the fenced completion on any executor.
pub(crate) async fn complete_on<'e>(
    exec: impl SqliteExecutor<'e>,
    a: &AttemptRef<'_>,
    outcome: Outcome<'_>,
) -> Result<Fence, Error> {
    let attempt = i64::try_from(a.attempt).unwrap_or(i64::MAX);
    let query = sqlx::query(&sql().complete)
        .bind(&a.key.0[..])
        .bind(attempt);
    let row = CompletionRow::from(outcome);
    let query = query
        .bind(row.status)
        .bind(row.snapshot)
        .bind(row.snapshot_kind)
        .bind(row.error)
        .bind(row.ttl_ms)
        .bind(row.attempt_outcome);
    let done = query
        .execute(exec)
        .await
        .map_err(|e| Error::store("complete", a.op, a.key, e))?;
    Ok(if done.rows_affected() == 1 {
        Fence::Owned
    } else {
        Fence::Lost
    })
}

fn record_of(row: &SqliteRow) -> Result<Record, String> {
    let col = |e: sqlx::Error| e.to_string();
    let key = Key(bytes32(row.try_get("key").map_err(col)?, "key")?);
    let status: String = row.try_get("status").map_err(col)?;
    let kind: Option<String> = row.try_get("snapshot_kind").map_err(col)?;
    Ok(Record {
        key,
        op: row.try_get("op").map_err(col)?,
        status: Status::from_str(&status)?,
        attempt: u64_of(row.try_get("attempt").map_err(col)?, "attempt")?,
        fingerprint: row
            .try_get::<Option<Vec<u8>>, _>("fingerprint")
            .map_err(col)?
            .map(|b| bytes32(b, "fingerprint").map(Fingerprint))
            .transpose()?,
        snapshot: row.try_get("snapshot").map_err(col)?,
        snapshot_kind: kind.as_deref().and_then(SnapshotKind::parse),
        error: row.try_get("error").map_err(col)?,
        lease_until: row.try_get("lease_until").map_err(col)?,
        worker: row.try_get("worker").map_err(col)?,
        created_at: row.try_get("created_at").map_err(col)?,
        updated_at: row.try_get("updated_at").map_err(col)?,
        expires_at: row.try_get("expires_at").map_err(col)?,
    })
}

const RECORD_COLUMNS: &str = "key, op, status, attempt, fingerprint, snapshot, snapshot_kind, \
                              error, lease_until, worker, created_at, updated_at, expires_at";

/// [`RECORD_COLUMNS`] for listings: never the snapshot, which may be megabytes.
const LISTED_COLUMNS: &str = "key, op, status, attempt, fingerprint, NULL AS snapshot, \
                              snapshot_kind, error, lease_until, worker, created_at, updated_at, \
                              expires_at";

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, Error> {
        // A row that changes between the claim's two statements is re-claimed; three tries are
        // plenty, since each change is a lease or TTL boundary passing.
        for _ in 0..3 {
            if let Some(claim) = claim_on(&self.pool, req).await? {
                return Ok(claim);
            }
        }
        Err(Error::store(
            "claim",
            req.op,
            req.key,
            "the record kept changing during the claim",
        ))
    }

    async fn renew(&self, a: &AttemptRef<'_>, lease: Duration) -> Result<Fence, Error> {
        let done = sqlx::query(&sql().renew)
            .bind(&a.key.0[..])
            .bind(i64::try_from(a.attempt).unwrap_or(i64::MAX))
            .bind(millis(lease))
            .execute(&self.pool)
            .await
            .map_err(|e| Error::store("renew", a.op, a.key, e))?;
        Ok(if done.rows_affected() == 1 {
            Fence::Owned
        } else {
            Fence::Lost
        })
    }

    async fn complete(&self, a: &AttemptRef<'_>, outcome: Outcome<'_>) -> Result<Fence, Error> {
        let fence = complete_on(&self.pool, a, outcome).await?;
        if fence == Fence::Lost {
            let error = outcome.error();
            sqlx::query(&sql().fence_log)
                .bind(&a.key.0[..])
                .bind(i64::try_from(a.attempt).unwrap_or(i64::MAX))
                .bind(error)
                .execute(&self.pool)
                .await
                .map_err(|e| Error::store("complete", a.op, a.key, e))?;
        }
        Ok(fence)
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM idem_records WHERE key = ?1"
        ))
        .bind(&key.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::store("get", "", key, e))?;
        row.map(|r| record_of(&r))
            .transpose()
            .map_err(|reason| Error::Corrupt {
                op: String::new(),
                key: *key,
                reason,
            })
    }

    async fn attempts(&self, key: &Key) -> Result<Vec<AttemptLog>, Error> {
        let rows = sqlx::query(
            "SELECT attempt, worker, started_at, ended_at, outcome, error FROM idem_attempts
             WHERE key = ?1
             UNION ALL
             SELECT attempt, coalesce(worker, ''), attempt_started_at,
                    CASE WHEN status = 'running' THEN NULL ELSE updated_at END,
                    attempt_outcome, error
             FROM idem_records WHERE key = ?1
             ORDER BY attempt",
        )
        .bind(&key.0[..])
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::store("attempts", "", key, e))?;
        rows.iter()
            .map(attempt_log_of)
            .collect::<Result<_, String>>()
            .map_err(|reason| Error::Corrupt {
                op: String::new(),
                key: *key,
                reason,
            })
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {LISTED_COLUMNS} FROM idem_records
             WHERE (?1 IS NULL OR op = ?1) AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR updated_at < ?3)
             ORDER BY updated_at DESC, key LIMIT ?4"
        ))
        .bind(filter.op.as_deref())
        .bind(filter.status.map(Status::as_str))
        .bind(filter.updated_before)
        .bind(i64::from(filter.limit.unwrap_or(1000)))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::store("list", "", &Key([0; 32]), e))?;
        rows.iter()
            .map(record_of)
            .collect::<Result<_, String>>()
            .map_err(|reason| Error::Corrupt {
                op: String::new(),
                key: Key([0; 32]),
                reason,
            })
    }

    async fn counts(&self, op: Option<&str>) -> Result<Vec<OpCounts>, Error> {
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT op, count(*), coalesce(sum(status = 'running'), 0),
                    coalesce(sum(status = 'running' AND lease_until < {NOW}), 0),
                    coalesce(sum(status = 'completed'), 0), coalesce(sum(status = 'failed'), 0),
                    coalesce(sum(attempt), 0)
             FROM idem_records WHERE ?1 IS NULL OR op = ?1
             GROUP BY op ORDER BY op"
        ))
        .bind(op)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::store("count", op.unwrap_or_default(), &Key([0; 32]), e))?;
        Ok(rows.into_iter().map(counts_of).collect())
    }

    async fn forget(&self, key: &Key, force: bool) -> Result<bool, Error> {
        let fail = |e: sqlx::Error| Error::store("forget", "", key, e);
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        // The write lock is taken first, so the liveness read and the delete are one decision.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
        if !force {
            let live: Option<(String, i64)> = sqlx::query_as(&format!(
                "SELECT op, attempt FROM idem_records
                 WHERE key = ?1 AND status = 'running' AND lease_until > {NOW}"
            ))
            .bind(&key.0[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?;
            if let Some((op, attempt)) = live {
                tx.rollback().await.map_err(fail)?;
                return Err(Error::Running {
                    op,
                    key: *key,
                    attempt: u64::try_from(attempt).unwrap_or(0),
                });
            }
        }
        sqlx::query(
            "UPDATE idem_meta SET value = max(value, coalesce(
                 (SELECT attempt FROM idem_records WHERE key = ?1), 0))
             WHERE name = 'attempt_floor'",
        )
        .bind(&key.0[..])
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        let done = sqlx::query("DELETE FROM idem_records WHERE key = ?1")
            .bind(&key.0[..])
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, key: &Key) -> Result<bool, Error> {
        let released: Option<i64> = sqlx::query_scalar(&sql().release)
            .bind(&key.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::store("release", "", key, e))?;
        Ok(released.is_some())
    }

    async fn purge_expired(&self, batch: u32, abandoned_after: Duration) -> Result<u64, Error> {
        let fail = |e: sqlx::Error| Error::store("purge", "", &Key([0; 32]), e);
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
        // Expired records come from the index. Abandoned running records have none (it would
        // cost every claim and completion a page write), so they are looked for with a scan,
        // only once the expired ones are gone: the last batch of a purge.
        let mut purged: Vec<i64> = sqlx::query_scalar(&sql().purge_expired)
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await
            .map_err(fail)?;
        let left = i64::from(batch) - purged.len() as i64;
        if left > 0 {
            let abandoned: Vec<i64> = sqlx::query_scalar(&sql().purge_abandoned)
                .bind(left)
                .bind(millis(abandoned_after))
                .fetch_all(&mut *tx)
                .await
                .map_err(fail)?;
            purged.extend(abandoned);
        }
        if let Some(highest) = purged.iter().max() {
            sqlx::query("UPDATE idem_meta SET value = max(value, ?1) WHERE name = 'attempt_floor'")
                .bind(highest)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(purged.len() as u64)
    }
}
