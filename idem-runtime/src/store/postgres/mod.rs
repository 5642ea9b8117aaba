//! The PostgreSQL store (`postgres://...`): for fleets of workers on many machines.
//!
//! - **One statement decides a claim.** Two statements can: `claim`, a plain read of the
//!   record that calls the `<prefix>acquire` function when the record is not live (replay, wait,
//!   take over, run again after a failure or expiry, fingerprint mismatch: all in one round
//!   trip), and `claim_new`, a plain `INSERT ... ON CONFLICT DO NOTHING` for a key without a
//!   record. The store sends first the one its per-operation guess picks (`store/predict.rs`); a wrong
//!   guess costs one more round trip, never a wrong decision, because each statement is
//!   race-free on its own under READ COMMITTED (see `sql.rs` and `schema.rs`). A replay or a wait
//!   writes nothing: one index lookup, no WAL flush. Completes and renews are `UPDATE`s fenced
//!   on `(key, attempt, status = 'running')`.
//! - **The server's clock** (`statement_timestamp()`) for every lease and expiry: no worker's
//!   clock is ever sent, so a worker whose clock is off can neither steal a live lease nor keep a
//!   dead one.
//! - **LISTEN/NOTIFY** wakes waiting callers and keeps snapshot caches fresh: a claim told
//!   `running` flags the record; after the completion of a flagged record (and in every release
//!   and forget) the key (hex) is notified on the store's channel; one listener connection per
//!   store feeds every waiter and every watching cache (`listen.rs`), so a `forget` anywhere
//!   reaches every worker's cache in milliseconds. While it is down, waiters poll and caches
//!   fall back to their time bound. Completions nobody waits for skip NOTIFY, whose commit lock
//!   would otherwise serialize all completing workers.
//! - **Configurable schema and table prefix** (validated identifiers), embedded migrations that
//!   serialize on `pg_advisory_xact_lock` (see `schema.rs`, which also documents the format).
//! - **Bounded lock waits** (`locks.rs`): the store's own connections have a `lock_timeout`
//!   (50 ms by default), so a claim blocked behind an open transactional step is told `running`
//!   and waits (or refuses) per its options without holding a connection, and one slow step
//!   cannot exhaust the pool for other keys; steps take the key's advisory lock, without
//!   waiting, before their claim.
//! - **Batched purge** with `FOR UPDATE SKIP LOCKED`, so it never waits for a claimer.
//! - **A stream journal** (`chunks.rs`): an attempt's chunks are appended by one fenced
//!   statement, which notifies like a completion when someone waits, and deleted with their
//!   record by a trigger.
//!
//! Open it from a URL ([`PostgresStore::open`], also through `store::open` and `Idem::open`), or
//! on an application's existing pool ([`PostgresStore::from_pool`]); [`PostgresStore::builder`]
//! and [`PostgresStoreBuilder::from_pool`] take options. A URL may carry the store's own options
//! as query parameters, removed before the URL reaches the driver: `idem_schema`,
//! `idem_table_prefix`, `idem_max_connections`, `idem_acquire_timeout_ms`, `idem_lock_timeout_ms`
//! (`postgres://app@db/prod?idem_schema=jobs&idem_max_connections=4`). The standard
//! `application_name` parameter names the store's connections (default `idem`), so an operator
//! can find them in `pg_stat_activity`.

/// Runs a statement (`$run`, an expression awaiting it, evaluated anew for each try) again while
/// its lock wait times out, for about two seconds (`locks.rs`): such a statement waits only on
/// short autocommit statements or, rarely, on a step.
macro_rules! retrying_locks {
    ($run:expr) => {{
        let mut retry = $crate::store::postgres::locks::LockRetry::new();
        loop {
            let result = $run;
            if !retry.again(&result).await {
                break result;
            }
        }
    }};
}
mod batch;
mod builder;
mod chunks;
mod combine;
mod conn;
mod listen;
mod locks;
mod purge;
mod rows;
mod schema;
mod sql;
mod step;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgExecutor, Row};

pub use self::batch::BatchStats;
pub use self::builder::PostgresStoreBuilder;
use self::combine::Way;
use self::conn::Connections;
use self::listen::Notifier;
use self::locks::{lock_timed_out, step_lock_id, Blocked, LockRetry, STEP_HELD};
use self::purge::{Phase, PurgeCursor, PurgeSql, SWEEP_PAGES};
use self::rows::{
    attempt_i64, bind_parent, claim_corrupt, claim_query, col, corrupt, decide, ClaimRead, Inserted,
};
use self::schema::Names;
pub use self::schema::FORMAT_VERSION;
use self::sql::Sql;
pub use self::step::{Step, StepTx};
use super::columns::{attempt_log_of, counts_of, record_of, u64_of};
use super::predict::Predictor;
use super::redact_url;
use super::{
    millis, AttemptRef, AvoidedCost, ChangeSink, Claim, ClaimRequest, CompletionRow, CostLine,
    Fence, ListFilter, OpCounts, Outcome, Store, StoredChunk,
};
use crate::error::Error;
use crate::key::Key;
use crate::record::{AttemptLog, Record, Status};

/// How many times a claim re-runs its statement when the row changed under it (a concurrent
/// claimer inserted it after this statement's snapshot, or a lease ran out mid-statement).
const CLAIM_TRIES: usize = 8;

/// The key used in errors of store-wide actions.
pub(super) const NO_KEY: Key = Key([0; 32]);

/// A [`Store`] on a PostgreSQL database, shared by any number of processes and machines.
/// Cheap to clone (the pool and statements are shared).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conns: Arc<Connections>,
    /// Claims of new keys and completions, batched while many are pending (`batch.rs`).
    batches: batch::Batches,
    names: Names,
    sql: Sql,
    notifier: Option<Notifier>,
    predictor: Predictor,
    /// Keys whose last claim timed out on a lock (`locks.rs`).
    blocked: Arc<Blocked>,
    /// Purge's statements and where the current purge is (`purge.rs`).
    purge_sql: PurgeSql,
    purge_cursor: PurgeCursor,
}

#[derive(Clone)]
enum Source {
    Url(String),
    Pool(PgPool),
}

/// Never prints a password: a builder's `Debug` may reach logs.
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            Source::Pool(pool) => f.debug_tuple("Pool").field(pool).finish(),
        }
    }
}

impl PostgresStore {
    /// Opens `url` (`postgres://user:password@host:5432/db?...`) with default options.
    pub async fn open(url: &str) -> Result<Self, Error> {
        Self::builder(url).open().await
    }

    /// Options for opening `url`.
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder::with_source(Source::Url(url.to_owned()))
    }

    /// Uses an application's existing pool (default schema `public`, prefix `idem_`), creating
    /// or upgrading the idem tables in it. For other names, use [`PostgresStoreBuilder::from_pool`].
    pub async fn from_pool(pool: PgPool) -> Result<Self, Error> {
        PostgresStoreBuilder::from_pool(pool).open().await
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        self.inner.conns.pool()
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.names.schema
    }

    /// The prefix of the store's table names (`idem_` by default).
    pub fn table_prefix(&self) -> &str {
        &self.inner.names.prefix
    }

    /// The quoted, schema-qualified name of the records table (for operators' own queries).
    pub fn records_table(&self) -> &str {
        &self.inner.names.records
    }

    /// The quoted, schema-qualified name of the attempts table.
    pub fn attempts_table(&self) -> &str {
        &self.inner.names.attempts
    }

    /// The LISTEN/NOTIFY channel the store notifies changes on (payload: the key in hex).
    pub fn channel(&self) -> &str {
        &self.inner.names.channel
    }

    /// Whether the change listener is connected (waiters poll while it is not).
    pub fn listening(&self) -> bool {
        self.inner.notifier.as_ref().is_some_and(Notifier::is_up)
    }

    /// Stops the change listener and closes the pool.
    pub async fn close(&self) {
        if let Some(notifier) = &self.inner.notifier {
            notifier.close().await;
        }
        self.inner.conns.give_back_all();
        self.inner.conns.pool().close().await;
    }

    /// Runs the insert of a key without a record on any executor.
    pub(crate) async fn claim_new_on<'e>(
        &self,
        exec: impl PgExecutor<'e>,
        req: &ClaimRequest<'_>,
    ) -> Result<Inserted, Error> {
        let row = match bind_parent(claim_query(&self.inner.sql.claim_new, req), req)
            .fetch_optional(exec)
            .await
        {
            Err(e) if lock_timed_out(&e) => return Ok(Inserted::Locked),
            row => row.map_err(|e| Error::store("claim", req.op, req.key, e))?,
        };
        inserted(req, row)
    }

    /// The insert of a key without a record, for a step: it inserts only when it got the key's
    /// step lock (no row back: the key has a record, or another step holds it; the read says).
    async fn claim_new_step_on(
        &self,
        conn: &mut sqlx::PgConnection,
        req: &ClaimRequest<'_>,
    ) -> Result<Inserted, Error> {
        let query = claim_query(&self.inner.sql.claim_new_step, req).bind(step_lock_id(req.key));
        let row = bind_parent(query, req)
            .fetch_optional(conn)
            .await
            .map_err(|e| Error::store("claim", req.op, req.key, e))?;
        inserted(req, row)
    }

    /// The claim read, for a step: `Locked` when another step holds the key's step lock.
    async fn claim_step_on(
        &self,
        conn: &mut sqlx::PgConnection,
        req: &ClaimRequest<'_>,
    ) -> Result<ClaimRead, Error> {
        let row = claim_query(&self.inner.sql.claim_step, req)
            .bind(step_lock_id(req.key))
            .fetch_one(conn)
            .await
            .map_err(|e| Error::store("claim", req.op, req.key, e))?;
        let taken: bool = row
            .try_get("taken")
            .map_err(|e| claim_corrupt(req)(col(e)))?;
        if !taken {
            return Ok(ClaimRead::Locked);
        }
        let attempt: Option<i64> = row
            .try_get("attempt")
            .map_err(|e| claim_corrupt(req)(col(e)))?;
        if attempt.is_none() {
            return Ok(ClaimRead::NoRecord);
        }
        decide(req, &row).map_err(claim_corrupt(req))
    }

    /// Runs the claim statement on any executor (a pool, a connection, a caller's transaction).
    pub(crate) async fn claim_on<'e>(
        &self,
        exec: impl PgExecutor<'e>,
        req: &ClaimRequest<'_>,
    ) -> Result<ClaimRead, Error> {
        let row = match claim_query(&self.inner.sql.claim, req)
            .fetch_optional(exec)
            .await
        {
            Err(e) if lock_timed_out(&e) => return Ok(ClaimRead::Locked),
            row => row.map_err(|e| Error::store("claim", req.op, req.key, e))?,
        };
        let Some(row) = row else {
            return Ok(ClaimRead::NoRecord);
        };
        decide(req, &row).map_err(claim_corrupt(req))
    }

    /// Runs the fenced completion on any executor. With an owned completion comes whether
    /// callers wait for it (the caller then sends [`Self::notify`] after the commit).
    pub(crate) async fn complete_on<'e>(
        &self,
        exec: impl PgExecutor<'e>,
        a: &AttemptRef<'_>,
        outcome: Outcome<'_>,
    ) -> Result<(Fence, bool), Error> {
        let query = sqlx::query_scalar::<_, bool>(&self.inner.sql.complete)
            .bind(&a.key.0[..])
            .bind(attempt_i64(a.attempt));
        let row = CompletionRow::from(outcome);
        let query = query
            .bind(row.status)
            .bind(row.snapshot)
            .bind(row.snapshot_kind)
            .bind(row.error)
            .bind(row.ttl_ms)
            .bind(row.attempt_outcome)
            .bind(row.cost);
        let waiters = query
            .fetch_optional(exec)
            .await
            .map_err(|e| Error::store("complete", a.op, a.key, e))?;
        Ok(match waiters {
            Some(waiters) => (Fence::Owned, waiters),
            None => (Fence::Lost, false),
        })
    }

    /// The fenced completion as its own statement, retried while its lock wait times out.
    async fn complete_alone(
        &self,
        a: &AttemptRef<'_>,
        outcome: Outcome<'_>,
    ) -> Result<(Fence, bool), Error> {
        let mut held = self.held("complete", a.op, a.key).await?;
        let mut retry = LockRetry::new();
        let done = loop {
            // `complete_on` takes any executor, so its error is already typed: the lock
            // timeout is found in its source.
            let done = self.complete_on(held.conn(), a, outcome).await;
            let timed_out = matches!(&done, Err(Error::Store { source, .. })
                if source.downcast_ref::<sqlx::Error>().is_some_and(lock_timed_out));
            if !retry.again_if(timed_out).await {
                break done?;
            }
        };
        held.done();
        Ok(done)
    }

    /// How many claims and completions went in batches so far (see
    /// [`PostgresStoreBuilder::batch_after`]).
    pub fn batch_stats(&self) -> BatchStats {
        self.inner.batches.stats()
    }

    /// Wakes every process waiting for `key` (their listeners hear the key on the channel) and
    /// drops it from their snapshot caches. Best effort: a waiter that misses it polls.
    async fn notify(&self, op: &str, key: &Key) {
        let notified = match self.held("notify", op, key).await {
            Ok(mut held) => {
                let sent = retrying_locks!(
                    sqlx::query(&self.inner.sql.notify)
                        .bind(&key.0[..])
                        .execute(held.conn())
                        .await
                )
                .map_err(|e| Error::store("notify", op, key, e));
                if sent.is_ok() {
                    held.done();
                }
                sent.map(drop)
            }
            Err(e) => Err(e),
        };
        if let Err(error) = notified {
            tracing::debug!(op, %error, "idem: cannot notify waiters; they will poll");
        }
    }
}

impl PostgresStore {
    /// A connection for a hot statement (see `conn.rs`), or the typed error of `action`.
    async fn held(&self, action: &'static str, op: &str, key: &Key) -> Result<conn::Held, Error> {
        self.inner
            .conns
            .get()
            .await
            .map_err(|e| Error::store(action, op, key, e))
    }

    /// Decides a claim on one connection: one statement when the guess is right.
    pub(crate) async fn claim_with(
        &self,
        conn: &mut sqlx::PgConnection,
        req: &ClaimRequest<'_>,
        in_transaction: bool,
    ) -> Result<Claim, Error> {
        let insert = self.inner.predictor.guess_new(req.op);
        self.claim_from(conn, req, in_transaction, insert, false)
            .await
    }

    /// [`Self::claim_with`], starting with the insert or the read as told (`learned`: the
    /// guess was already corrected by an earlier statement).
    async fn claim_from(
        &self,
        conn: &mut sqlx::PgConnection,
        req: &ClaimRequest<'_>,
        in_transaction: bool,
        insert: bool,
        learned: bool,
    ) -> Result<Claim, Error> {
        // A step never waits on another step's row (its statement would time out and abort
        // its transaction, or wait as long as the other step): its claim statements take the
        // key's advisory lock first, without waiting, in the same statement, and turn the lock
        // timeout off for the rest of its transaction (the caller's writes included). Its claim
        // can then wait only on ordinary autocommit statements, which end promptly. See
        // `locks.rs` and `sql.rs`.
        // Which statement goes first: the insert (a key without a record) or the read (one
        // with a record). Each decides alone; a wrong guess costs one more round trip.
        let predictor = &self.inner.predictor;
        let (mut insert, mut learned) = (insert, learned);
        for _ in 0..CLAIM_TRIES {
            if insert {
                let inserted = if in_transaction {
                    self.claim_new_step_on(&mut *conn, req).await?
                } else {
                    self.claim_new_on(&mut *conn, req).await?
                };
                if !learned {
                    predictor.learn(req.op, inserted != Inserted::HasRecord);
                    learned = true;
                }
                match inserted {
                    Inserted::Acquired(attempt) => {
                        return Ok(Claim::Acquired {
                            attempt,
                            took_over: None,
                        })
                    }
                    Inserted::HasRecord => {}
                    Inserted::Locked => return Ok(self.locked(req)),
                }
            }
            let claimed = if in_transaction {
                self.claim_step_on(&mut *conn, req).await?
            } else {
                self.claim_on(&mut *conn, req).await?
            };
            if !learned {
                predictor.learn(req.op, matches!(claimed, ClaimRead::NoRecord));
                learned = true;
            }
            match claimed {
                ClaimRead::Locked if in_transaction => return Ok(uncommitted_attempt(req)),
                ClaimRead::Locked => return Ok(self.locked(req)),
                ClaimRead::NoRecord => insert = true,
                ClaimRead::Changed => insert = false,
                ClaimRead::Decided { claim, waiters } => {
                    // Not inside a step's transaction: the flag would lock the owner's
                    // record (its heartbeat and completion would wait) until the step rolls
                    // back, which undoes it anyway; a waiting step polls.
                    if let Claim::Running { attempt, .. } = claim {
                        if !waiters && !in_transaction {
                            let flagged = sqlx::query(&self.inner.sql.flag_waiters)
                                .bind(&req.key.0[..])
                                .bind(attempt_i64(attempt))
                                .execute(&mut *conn)
                                .await;
                            match flagged {
                                // Someone else is writing the row (flagging it, completing
                                // it): the waiter looks again soon anyway.
                                Err(e) if lock_timed_out(&e) => {}
                                flagged => {
                                    flagged
                                        .map_err(|e| Error::store("claim", req.op, req.key, e))?;
                                }
                            }
                        }
                    }
                    return Ok(claim);
                }
            }
        }
        Err(Error::store(
            "claim",
            req.op,
            req.key,
            "the record kept changing during the claim",
        ))
    }

    /// A claim statement timed out on the key's row lock: an attempt is under way. The key's
    /// next claims first ask whether a step holds it, without waiting (`locks.rs`).
    fn locked(&self, req: &ClaimRequest<'_>) -> Claim {
        self.inner.blocked.insert(req.key);
        uncommitted_attempt(req)
    }
}

/// What a claim reports when an uncommitted attempt holds the key (a transactional step's, or
/// a claim committing right now): running, attempt 0 (its number is not visible), with a whole
/// lease left (it is the engine's `wait` that bounds the wait).
fn uncommitted_attempt(req: &ClaimRequest<'_>) -> Claim {
    Claim::Running {
        attempt: 0,
        lease_left: req.lease,
    }
}

/// What the insert of a key without a record returned: its attempt, or no row (the key has a
/// record; for a step, or another step holds the key).
fn inserted(req: &ClaimRequest<'_>, row: Option<PgRow>) -> Result<Inserted, Error> {
    match row {
        None => Ok(Inserted::HasRecord),
        Some(row) => row
            .try_get("attempt")
            .map_err(col)
            .and_then(|attempt| u64_of(attempt, "attempt"))
            .map(Inserted::Acquired)
            .map_err(claim_corrupt(req)),
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn sql_store(&self) -> Option<crate::store::SqlStore<'_>> {
        Some(crate::store::SqlStore::Postgres(self))
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, Error> {
        if let Some(notifier) = &self.inner.notifier {
            notifier.keep_listening();
        }
        // A guessed new key, while the store already runs enough inserts: it goes in the next
        // batch (`batch.rs`) without taking a connection, and only an insert that found a
        // record (or a failed batch) goes on alone.
        let predictor = &self.inner.predictor;
        let mut insert = predictor.guess_new(req.op);
        let mut learned = false;
        let mut turn = None;
        if insert && !self.inner.blocked.contains(req.key) {
            match self.inner.batches.claim(req) {
                None => {}
                Some(Way::Alone(alone)) => turn = Some(alone),
                Some(Way::Queued(answer)) => match answer.await {
                    Ok(Some(Inserted::Acquired(attempt))) => {
                        predictor.learn(req.op, true);
                        return Ok(Claim::Acquired {
                            attempt,
                            took_over: None,
                        });
                    }
                    Ok(Some(Inserted::HasRecord)) => {
                        predictor.learn(req.op, false);
                        (insert, learned) = (false, true);
                    }
                    Ok(Some(Inserted::Locked)) => return Ok(self.locked(req)),
                    Ok(None) | Err(_) => {}
                },
            }
        }
        let mut held = self.held("claim", req.op, req.key).await?;
        // A key whose last claim timed out on a lock: while a step holds it, say so without
        // waiting on its row (one short round trip per look, see `locks.rs`). Asked again
        // after the batch: a claim alone may have found the lock meanwhile.
        if self.inner.blocked.contains(req.key) {
            let step_holds: bool = sqlx::query_scalar(STEP_HELD)
                .bind(step_lock_id(req.key))
                .fetch_one(held.conn())
                .await
                .map_err(|e| Error::store("claim", req.op, req.key, e))?;
            if step_holds {
                held.done();
                return Ok(uncommitted_attempt(req));
            }
            self.inner.blocked.remove(req.key);
        }
        let claim = self
            .claim_from(held.conn(), req, false, insert, learned)
            .await?;
        drop(turn);
        // Attempt 0 here: the claim's last statement failed (a lock timeout), so its
        // connection goes back through sqlx, which checks it (see `conn.rs`).
        if !matches!(claim, Claim::Running { attempt: 0, .. }) {
            held.done();
        }
        Ok(claim)
    }

    async fn renew(&self, a: &AttemptRef<'_>, lease: Duration) -> Result<Fence, Error> {
        let mut held = self.held("renew", a.op, a.key).await?;
        let done = retrying_locks!(
            sqlx::query(&self.inner.sql.renew)
                .bind(&a.key.0[..])
                .bind(attempt_i64(a.attempt))
                .bind(millis(lease))
                .execute(held.conn())
                .await
        )
        .map_err(|e| Error::store("renew", a.op, a.key, e))?;
        held.done();
        Ok(if done.rows_affected() == 1 {
            Fence::Owned
        } else {
            Fence::Lost
        })
    }

    async fn complete(&self, a: &AttemptRef<'_>, outcome: Outcome<'_>) -> Result<Fence, Error> {
        let batched = match self.inner.batches.complete(a, outcome) {
            Some(Way::Queued(answer)) => answer.await.ok().flatten(),
            Some(Way::Alone(turn)) => {
                let alone = self.complete_alone(a, outcome).await;
                drop(turn);
                Some(alone)
            }
            None => None,
        };
        let (fence, waiters) = match batched {
            Some(done) => done?,
            None => self.complete_alone(a, outcome).await?,
        };
        if waiters {
            self.notify(a.op, a.key).await;
        }
        if fence == Fence::Lost {
            let error = outcome.error();
            let cost = outcome.cost().map(crate::record::Costs::to_json);
            let mut held = self.held("complete", a.op, a.key).await?;
            retrying_locks!(
                sqlx::query(&self.inner.sql.fence_log)
                    .bind(&a.key.0[..])
                    .bind(attempt_i64(a.attempt))
                    .bind(error)
                    .bind(&cost)
                    .execute(held.conn())
                    .await
            )
            .map_err(|e| Error::store("complete", a.op, a.key, e))?;
            held.done();
        }
        Ok(fence)
    }

    fn wakes_waiters(&self) -> bool {
        self.listening()
    }

    fn watch(&self, sink: std::sync::Weak<dyn ChangeSink>) -> bool {
        match &self.inner.notifier {
            Some(notifier) => {
                notifier.watch(sink);
                true
            }
            None => false,
        }
    }

    async fn wait_for_change(&self, key: &Key, max: Duration) {
        match &self.inner.notifier {
            Some(notifier) => notifier.wait(key, max).await,
            None => tokio::time::sleep(max).await,
        }
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        let mut held = self.held("get", "", key).await?;
        let row = sqlx::query(&self.inner.sql.get)
            .bind(&key.0[..])
            .fetch_optional(held.conn())
            .await
            .map_err(|e| Error::store("get", "", key, e))?;
        held.done();
        row.map(|r| record_of(&r)).transpose().map_err(corrupt(key))
    }

    async fn attempts(&self, key: &Key) -> Result<Vec<AttemptLog>, Error> {
        let mut held = self.held("attempts", "", key).await?;
        let rows = sqlx::query(&self.inner.sql.attempts)
            .bind(&key.0[..])
            .fetch_all(held.conn())
            .await
            .map_err(|e| Error::store("attempts", "", key, e))?;
        held.done();
        rows.iter()
            .map(attempt_log_of)
            .collect::<Result<_, String>>()
            .map_err(corrupt(key))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, Error> {
        let mut held = self.held("list", "", &NO_KEY).await?;
        let limit = i64::from(filter.limit.unwrap_or(1000));
        let rows = sqlx::query(&self.inner.sql.list)
            .bind(filter.op.as_deref())
            .bind(filter.status.map(Status::as_str))
            .bind(filter.updated_before)
            .bind(limit)
            .fetch_all(held.conn())
            .await
            .map_err(|e| Error::store("list", "", &NO_KEY, e))?;
        held.done();
        rows.iter()
            .map(record_of)
            .collect::<Result<_, String>>()
            .map_err(corrupt(&NO_KEY))
    }

    async fn add_avoided(&self, avoided: &[AvoidedCost]) -> Result<(), Error> {
        if avoided.is_empty() {
            return Ok(());
        }
        let ops: Vec<&str> = avoided.iter().map(|a| a.op.as_str()).collect();
        let units: Vec<&str> = avoided.iter().map(|a| a.unit.as_str()).collect();
        let amounts: Vec<f64> = avoided.iter().map(|a| a.amount).collect();
        let replays: Vec<i64> = avoided
            .iter()
            .map(|a| i64::try_from(a.replays).unwrap_or(i64::MAX))
            .collect();
        let mut held = self.held("add_avoided", "", &NO_KEY).await?;
        retrying_locks!(
            sqlx::query(&self.inner.sql.add_avoided)
                .bind(&ops)
                .bind(&units)
                .bind(&amounts)
                .bind(&replays)
                .execute(held.conn())
                .await
        )
        .map_err(|e| Error::store("add_avoided", "", &NO_KEY, e))?;
        held.done();
        Ok(())
    }

    async fn costs(&self, op: Option<&str>) -> Result<Vec<CostLine>, Error> {
        let mut held = self.held("costs", op.unwrap_or(""), &NO_KEY).await?;
        let rows: Vec<(String, String, f64, f64, i64)> = sqlx::query_as(&self.inner.sql.costs)
            .bind(op)
            .fetch_all(held.conn())
            .await
            .map_err(|e| Error::store("costs", op.unwrap_or(""), &NO_KEY, e))?;
        held.done();
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
        let mut held = self.held("children", "", parent).await?;
        let rows = sqlx::query(&self.inner.sql.children)
            .bind(&parent.0[..])
            .fetch_all(held.conn())
            .await
            .map_err(|e| Error::store("children", "", parent, e))?;
        held.done();
        rows.iter()
            .map(record_of)
            .collect::<Result<_, String>>()
            .map_err(corrupt(parent))
    }

    async fn forget(&self, key: &Key, force: bool) -> Result<bool, Error> {
        let mut held = self.held("forget", "", key).await?;
        let row: (i64, Option<String>, Option<i64>) = retrying_locks!(
            sqlx::query_as(&self.inner.sql.forget)
                .bind(&key.0[..])
                .bind(force)
                .fetch_one(held.conn())
                .await
        )
        .map_err(|e| Error::store("forget", "", key, e))?;
        held.done();
        match row {
            (_, Some(op), Some(attempt)) => Err(Error::Running {
                op,
                key: *key,
                attempt: u64::try_from(attempt).unwrap_or(0),
            }),
            (gone, _, _) => Ok(gone > 0),
        }
    }

    async fn append_chunks(
        &self,
        a: &AttemptRef<'_>,
        first: u64,
        chunks: &[StoredChunk],
    ) -> Result<Fence, Error> {
        self.journal_append(a, first, chunks).await
    }

    async fn read_chunks(
        &self,
        key: &Key,
        attempt: u64,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredChunk>, Error> {
        self.journal_read(key, attempt, from, limit).await
    }

    async fn count_chunks(&self, key: &Key, attempt: u64) -> Result<u64, Error> {
        self.journal_count(key, attempt).await
    }

    async fn release(&self, key: &Key) -> Result<bool, Error> {
        let mut held = self.held("release", "", key).await?;
        let released: i64 = retrying_locks!(
            sqlx::query_scalar(&self.inner.sql.release)
                .bind(&key.0[..])
                .fetch_one(held.conn())
                .await
        )
        .map_err(|e| Error::store("release", "", key, e))?;
        held.done();
        Ok(released > 0)
    }

    async fn counts(&self, op: Option<&str>) -> Result<Vec<OpCounts>, Error> {
        let action = "count";
        let mut held = self.held(action, op.unwrap_or_default(), &NO_KEY).await?;
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> =
            sqlx::query_as(&self.inner.sql.counts)
                .bind(op)
                .fetch_all(held.conn())
                .await
                .map_err(|e| Error::store(action, op.unwrap_or_default(), &NO_KEY, e))?;
        held.done();
        Ok(rows.into_iter().map(counts_of).collect())
    }

    async fn purge_expired(&self, batch: u32, abandoned_after: Duration) -> Result<u64, Error> {
        let fail = |e: sqlx::Error| Error::store("purge", "", &NO_KEY, e);
        let sql = &self.inner.purge_sql;
        let cursor = &self.inner.purge_cursor;
        let batch = i64::from(batch.max(1));
        let mut held = self.held("purge", "", &NO_KEY).await?;
        let mut gone = 0;
        // Each statement is bounded (one batch of the index, or one window of pages); a call
        // runs them until it has deleted `batch` records or the purge is over (see `purge.rs`).
        loop {
            match cursor.get() {
                phase @ (Phase::Expired | Phase::ExpiredFrom(_)) => {
                    let from = match phase {
                        Phase::ExpiredFrom(ms) => Some(ms),
                        _ => None,
                    };
                    let (n, last): (i64, Option<i64>) = retrying_locks!(
                        sqlx::query_as(&sql.expired)
                            .bind(batch)
                            .bind(from)
                            .fetch_one(held.conn())
                            .await
                    )
                    .map_err(fail)?;
                    gone += n;
                    if n >= batch {
                        cursor.set(last.or(from).map_or(Phase::Expired, Phase::ExpiredFrom));
                        break;
                    }
                    let pages: i64 = sqlx::query_scalar(&sql.pages)
                        .fetch_one(held.conn())
                        .await
                        .map_err(fail)?;
                    cursor.set(Phase::Sweep { page: 0, pages });
                }
                Phase::Sweep { page, pages } => {
                    if page >= pages {
                        // The purge is over: this call returns short, and the next purge
                        // starts again from the first expired record.
                        cursor.set(Phase::Expired);
                        break;
                    }
                    let room = batch - gone;
                    let n: i64 = retrying_locks!(
                        sqlx::query_scalar(&sql.abandoned)
                            .bind(page)
                            .bind(page + SWEEP_PAGES)
                            .bind(millis(abandoned_after))
                            .bind(room)
                            .fetch_one(held.conn())
                            .await
                    )
                    .map_err(fail)?;
                    gone += n;
                    if n >= room {
                        // The window may hold more: the next batch reads it again.
                        break;
                    }
                    cursor.set(Phase::Sweep {
                        page: page + SWEEP_PAGES,
                        pages,
                    });
                }
            }
        }
        held.done();
        Ok(u64::try_from(gone).unwrap_or(0))
    }
}
