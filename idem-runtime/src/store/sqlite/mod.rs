//! The embedded SQLite store (`sqlite://path`): one file, zero set-up, safe across processes.
//!
//! Each decision is one SQL statement, so it is atomic without a transaction: a claim is a pure
//! read of the row, which decides a replay or a wait (and, being a read, never waits for the
//! write lock); for a key without a live record, an
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE <claimable> RETURNING` with a read of the row
//! for the callers that did not acquire it, in one round trip. Completes and renews
//! are `UPDATE`s fenced on `(key, attempt, status = 'running')`. Multi-statement maintenance
//! (forget, release, purge) runs under `BEGIN IMMEDIATE`, so a read never turns into a write that
//! another process could beat. The statement functions take any `SqliteExecutor`, so a caller's
//! own transaction can carry them. A streamed result's chunks are journaled by fenced inserts
//! (`chunks.rs`) and deleted with their record by a trigger.

mod builder;
mod chunks;
mod open_steps;
mod purge;
mod rows;
mod schema;
mod sql;
mod step;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection, Row, SqliteExecutor};

pub use self::builder::SqliteStoreBuilder;
use self::open_steps::{uncommitted_attempt, OpenSteps};
use self::rows::decide;
pub use self::schema::FORMAT_VERSION;
use self::schema::NOW;
use self::sql::{sql, ADD_AVOIDED, COSTS, LISTED_COLUMNS, RECORD_COLUMNS};
pub use self::step::{Step, StepTx};
use super::columns::{attempt_log_of, counts_of, record_of, u64_of};
use super::predict::Predictor;
use super::{
    millis, AttemptRef, AvoidedCost, Claim, ClaimRequest, CompletionRow, CostLine, Fence,
    ListFilter, OpCounts, Outcome, Store, StoredChunk,
};
use crate::error::Error;
use crate::key::Key;
use crate::record::{AttemptLog, Record, Status};

/// A [`Store`] on one SQLite file (WAL mode), shared safely by any number of processes.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The keys of this process's open steps on this store (see `step.rs`).
    open_steps: Arc<OpenSteps>,
    /// Whether a claim reads first (see `store/predict.rs`).
    predictor: Arc<Predictor>,
    /// Where the current purge's sweep for abandoned records is (`purge.rs`).
    sweep: purge::SweepCursor,
}

impl SqliteStore {
    /// Opens `url` (`sqlite://path/to/file.db`, `sqlite::memory:`) with default options.
    pub async fn open(url: &str) -> Result<Self, Error> {
        Self::builder(url).open().await
    }

    /// Options for opening `url`.
    pub fn builder(url: &str) -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(url)
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
        Ok(Self::on(pool))
    }

    fn on(pool: SqlitePool) -> Self {
        Self {
            pool,
            open_steps: Arc::default(),
            predictor: Arc::default(),
            sweep: purge::SweepCursor::default(),
        }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Whether a claim of `op` reads the record first: a replay or a wait is then decided by a
    /// pure read, which never waits for the write lock (a writer, such as another key's open
    /// step, holds it), where the claim statement's insert, even one that inserts nothing,
    /// takes it. Done when the operation's recent claims found live records, or while a step
    /// of this process is open; otherwise a claim of a new key would pay a second statement
    /// for nothing (`store/predict.rs`).
    fn reads_first(&self, op: &str) -> bool {
        self.open_steps.any() || !self.predictor.guess_new(op)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED (and their extended codes).
pub(super) fn is_locked(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// Runs the claim statements on any executor (a pool, a connection, a caller's transaction).
pub(crate) async fn claim_on<'e>(
    exec: impl SqliteExecutor<'e>,
    req: &ClaimRequest<'_>,
) -> Result<Option<Claim>, Error> {
    let rows = claim_query(&sql().claim, req)
        .fetch_all(exec)
        .await
        .map_err(|e| Error::store("claim", req.op, req.key, e))?;
    decide(req, &rows).map_err(|reason| Error::Corrupt {
        op: req.op.to_owned(),
        key: *req.key,
        reason,
    })
}

/// A claim statement with its seven parameters bound: ?1 key, ?2 op, ?3 fingerprint, ?4 lease
/// ms, ?5 worker, ?6 parent key, ?7 position.
fn claim_query<'q>(
    text: &'q str,
    req: &'q ClaimRequest<'_>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    sqlx::query(text)
        .bind(&req.key.0[..])
        .bind(req.op)
        .bind(req.fingerprint.map(|f| &f.0[..]))
        .bind(millis(req.lease))
        .bind(req.worker)
        .bind(req.parent.as_ref().map(|p| &p.key.0[..]))
        .bind(req.parent.map(|p| i64::from(p.position)))
}

/// The insert of a key without a record: its attempt, or `None` when the key has a record.
async fn claim_new_on<'e>(
    exec: impl SqliteExecutor<'e>,
    req: &ClaimRequest<'_>,
) -> Result<Option<u64>, Error> {
    let row = claim_query(&sql().claim_new, req)
        .fetch_optional(exec)
        .await
        .map_err(|e| Error::store("claim", req.op, req.key, e))?;
    row.map(|r| {
        r.try_get::<i64, _>(0)
            .map_err(|e| e.to_string())
            .and_then(|a| u64_of(a, "attempt"))
    })
    .transpose()
    .map_err(|reason| Error::Corrupt {
        op: req.op.to_owned(),
        key: *req.key,
        reason,
    })
}

/// The claim's read alone (a pure read: it never waits for the write lock): the decision when
/// the key has a live record (replay, wait, key reuse), else `None` (no record, or one that can
/// be claimed: the claim statement decides).
async fn read_claim<'e>(
    exec: impl SqliteExecutor<'e>,
    req: &ClaimRequest<'_>,
) -> Result<Option<Claim>, Error> {
    let row = sqlx::query(&sql().read)
        .bind(&req.key.0[..])
        .fetch_optional(exec)
        .await
        .map_err(|e| Error::store("claim", req.op, req.key, e))?;
    let Some(row) = row else { return Ok(None) };
    decide(req, std::slice::from_ref(&row)).map_err(|reason| Error::Corrupt {
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
        .bind(row.attempt_outcome)
        .bind(row.cost);
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

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn sql_store(&self) -> Option<crate::store::SqlStore<'_>> {
        Some(crate::store::SqlStore::Sqlite(self))
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, Error> {
        // A step of this process has the key open: its claim is uncommitted and it holds the
        // write lock the claim statement would wait for (up to the busy timeout). Say so at
        // once; the caller waits, or refuses, per its options.
        if self.open_steps.holds(req.key) {
            return Ok(uncommitted_attempt(req.lease));
        }
        if self.reads_first(req.op) {
            if let Some(claim) = read_claim(&self.pool, req).await? {
                self.predictor.learn(req.op, false);
                return Ok(claim);
            }
        } else {
            let inserted = claim_new_on(&self.pool, req).await?;
            self.predictor.learn(req.op, inserted.is_some());
            if let Some(attempt) = inserted {
                return Ok(Claim::Acquired {
                    attempt,
                    took_over: None,
                });
            }
        }
        // A row that changes between the claim's two statements is re-claimed; three tries are
        // plenty, since each change is a lease or TTL boundary passing.
        for _ in 0..3 {
            if let Some(claim) = claim_on(&self.pool, req).await? {
                self.predictor
                    .learn(req.op, matches!(claim, Claim::Acquired { .. }));
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
            let cost = outcome.cost().map(crate::record::Costs::to_json);
            sqlx::query(&sql().fence_log)
                .bind(&a.key.0[..])
                .bind(i64::try_from(a.attempt).unwrap_or(i64::MAX))
                .bind(error)
                .bind(cost)
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
            "SELECT attempt, worker, started_at, ended_at, outcome, error, cost FROM idem_attempts
             WHERE key = ?1
             UNION ALL
             SELECT attempt, coalesce(worker, ''), attempt_started_at,
                    CASE WHEN status = 'running' THEN NULL ELSE updated_at END,
                    attempt_outcome, error, cost
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

    async fn add_avoided(&self, avoided: &[AvoidedCost]) -> Result<(), Error> {
        if avoided.is_empty() {
            return Ok(());
        }
        let failed = |e| Error::store("add_avoided", "", &Key([0; 32]), e);
        let mut tx = self.pool.begin().await.map_err(failed)?;
        for a in avoided {
            sqlx::query(ADD_AVOIDED)
                .bind(&a.op)
                .bind(&a.unit)
                .bind(a.amount)
                .bind(i64::try_from(a.replays).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)
    }

    async fn costs(&self, op: Option<&str>) -> Result<Vec<CostLine>, Error> {
        let rows: Vec<(String, String, f64, f64, i64)> = sqlx::query_as(COSTS)
            .bind(op)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::store("costs", op.unwrap_or(""), &Key([0; 32]), e))?;
        Ok(rows
            .into_iter()
            .map(|(op, unit, spent, avoided, replays)| {
                let mut line = CostLine::new(&op, &unit);
                line.spent = spent;
                line.avoided = avoided;
                line.replays = u64::try_from(replays).unwrap_or(0);
                line
            })
            .collect())
    }

    async fn children(&self, parent: &Key) -> Result<Vec<Record>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {LISTED_COLUMNS} FROM idem_records
             WHERE parent = ?1 ORDER BY position, created_at, key"
        ))
        .bind(&parent.0[..])
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::store("children", "", parent, e))?;
        rows.iter()
            .map(record_of)
            .collect::<Result<_, String>>()
            .map_err(|reason| Error::Corrupt {
                op: String::new(),
                key: *parent,
                reason,
            })
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, Error> {
        let text = format!(
            "SELECT {LISTED_COLUMNS} FROM idem_records
             WHERE (?1 IS NULL OR op = ?1) AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR updated_at < ?3)
             ORDER BY updated_at DESC, key LIMIT ?4"
        );
        let rows = sqlx::query(&text)
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
            // An operator's read: it scans the records (an index would cost every claim and
            // completion a page write).
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

    async fn append_chunks(
        &self,
        a: &AttemptRef<'_>,
        first: u64,
        chunks: &[StoredChunk],
    ) -> Result<Fence, Error> {
        chunks::append(&self.pool, a, first, chunks).await
    }

    async fn read_chunks(
        &self,
        key: &Key,
        attempt: u64,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredChunk>, Error> {
        chunks::read(&self.pool, key, attempt, from, limit).await
    }

    async fn count_chunks(&self, key: &Key, attempt: u64) -> Result<u64, Error> {
        chunks::count(&self.pool, key, attempt).await
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
        self.purge_batch(batch, abandoned_after).await
    }
}
