//! The PostgreSQL store (`postgres://...`): for fleets of workers on many machines.
//!
//! - **One statement decides a claim.** Two statements can: `claim`, a plain read of the
//!   record that calls the `<prefix>acquire` function when the record is not live (replay, wait,
//!   take over, run again after a failure or expiry, fingerprint mismatch: all in one round
//!   trip), and `claim_new`, a plain `INSERT ... ON CONFLICT DO NOTHING` for a key without a
//!   record. The store sends first the one its per-operation guess picks (`predict.rs`); a wrong
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
//! - **Batched purge** with `FOR UPDATE SKIP LOCKED`, so it never waits for a claimer.
//!
//! Open it from a URL ([`PostgresStore::open`], also through `store::open` and `Idem::open`), or
//! on an application's existing pool ([`PostgresStore::from_pool`]); [`PostgresStore::builder`]
//! and [`PostgresStoreBuilder::from_pool`] take options. A URL may carry the store's own options
//! as query parameters, removed before the URL reaches the driver: `idem_schema`,
//! `idem_table_prefix`, `idem_max_connections`, `idem_acquire_timeout_ms`
//! (`postgres://app@db/prod?idem_schema=jobs&idem_max_connections=4`). The standard
//! `application_name` parameter names the store's connections (default `idem`), so an operator
//! can find them in `pg_stat_activity`.

mod conn;
mod listen;
mod predict;
mod schema;
mod sql;
mod step;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgExecutor, Row};

use self::conn::Connections;
use self::listen::Notifier;
use self::predict::Predictor;
use self::schema::Names;
pub use self::schema::FORMAT_VERSION;
use self::sql::Sql;
pub use self::step::{Step, StepTx};
use super::columns::{bytes32, u64_of};
use super::redact_url;
use super::{
    millis, AttemptRef, ChangeSink, Claim, ClaimRequest, CompletionRow, Fence, ListFilter,
    OpCounts, Outcome, Store,
};
use crate::error::Error;
use crate::key::{Fingerprint, Key};
use crate::record::{AttemptLog, AttemptOutcome, Record, Snapshot, SnapshotKind, Status};

/// How many times a claim re-runs its statement when the row changed under it (a concurrent
/// claimer inserted it after this statement's snapshot, or a lease ran out mid-statement).
const CLAIM_TRIES: usize = 8;

/// The key used in errors of store-wide actions.
const NO_KEY: Key = Key([0; 32]);

/// A [`Store`] on a PostgreSQL database, shared by any number of processes and machines.
/// Cheap to clone (the pool and statements are shared).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conns: Arc<Connections>,
    names: Names,
    sql: Sql,
    notifier: Option<Notifier>,
    predictor: Predictor,
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

/// What opening found in the database, when it does not migrate.
enum Found {
    /// This build's tables.
    Ready,
    /// No idem tables under the store's schema and prefix.
    NoTables,
    /// The tables of another format version.
    Version(i32),
}

/// Brings the tables up to date (`migrate`), or checks that they are (read-only).
async fn prepare(
    conn: &mut sqlx::PgConnection,
    names: &Names,
    migrate: bool,
) -> Result<Found, sqlx::Error> {
    if migrate {
        schema::migrate(conn, names).await?;
        return Ok(Found::Ready);
    }
    Ok(match schema::check(conn, names).await? {
        None => Found::NoTables,
        Some(FORMAT_VERSION) => Found::Ready,
        Some(version) => Found::Version(version),
    })
}

/// Options for opening a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    source: Source,
    schema: String,
    table_prefix: String,
    max_connections: u32,
    acquire_timeout: Duration,
    application_name: Option<String>,
    notifications: bool,
    migrate: bool,
}

impl PostgresStoreBuilder {
    /// Options for a store on an application's existing pool. The pool's own settings are kept
    /// (the pool options of this builder apply only to pools it creates).
    pub fn from_pool(pool: PgPool) -> Self {
        Self::with_source(Source::Pool(pool))
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            schema: "public".into(),
            table_prefix: "idem_".into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            application_name: None,
            notifications: true,
            migrate: true,
        }
    }

    /// The schema holding the tables (default `public`; created by the migration if missing).
    /// Lower-case ASCII letters, digits and `_` only; anything else is [`Error::Config`].
    #[must_use]
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = schema.to_owned();
        self
    }

    /// The prefix of the table names (default `idem_`: `idem_records`, `idem_attempts`, ...).
    /// Lower-case ASCII letters, digits and `_` only, at most 40 bytes; may be empty.
    #[must_use]
    pub fn table_prefix(mut self, prefix: &str) -> Self {
        self.table_prefix = prefix.to_owned();
        self
    }

    /// The pool size (default 10), for pools this builder creates. The change listener uses one
    /// more connection, outside the pool.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a call waits for a connection before failing closed with [`Error::Store`]
    /// (default 5 s), for pools this builder creates.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The `application_name` of the connections this builder creates (default: the URL's
    /// `application_name` parameter, else `idem`).
    #[must_use]
    pub fn application_name(mut self, name: &str) -> Self {
        self.application_name = Some(name.to_owned());
        self
    }

    /// Whether waiting callers are woken by LISTEN/NOTIFY (default on); off, they poll.
    #[must_use]
    pub fn notifications(mut self, on: bool) -> Self {
        self.notifications = on;
        self
    }

    /// Whether opening creates or upgrades the tables (default on), and raises the attempt
    /// floor's mirror to the floor if a restore or a switchover left it behind. Off, opening
    /// creates and changes nothing (no schema, no table) and fails with [`Error::Open`]
    /// (`no idem tables in schema ...`) unless this build's tables exist (for roles without DDL
    /// rights, run the migration once with a privileged role; for operators' tools, where a
    /// typo in `idem_schema` must not create an empty store).
    #[must_use]
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// Applies the store's own URL query parameters and returns the URL without them.
    fn take_url_options(&mut self, url: &str) -> Result<String, Error> {
        let Some((base, query)) = url.split_once('?') else {
            return Ok(url.to_owned());
        };
        let bad = |reason: String| Error::Open {
            url: redact_url(url),
            reason,
            source: None,
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| bad(format!("`{what}` must be a whole number, not {value:?}")))
            };
            match name {
                "idem_schema" => self.schema = value.to_owned(),
                "idem_table_prefix" => self.table_prefix = value.to_owned(),
                "idem_max_connections" => {
                    self.max_connections = u32::try_from(number(name)?).unwrap_or(u32::MAX).max(1);
                }
                "idem_acquire_timeout_ms" => {
                    self.acquire_timeout = Duration::from_millis(number(name)?)
                }
                other if other.starts_with("idem_") => {
                    return Err(bad(format!(
                        "unknown parameter `{other}`; expected idem_schema, idem_table_prefix, \
                         idem_max_connections or idem_acquire_timeout_ms"
                    )))
                }
                _ => kept.push(pair),
            }
        }
        Ok(if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        })
    }

    /// Connects (for a URL), creates or upgrades the tables (or, with [`Self::migrate`]`(false)`,
    /// checks that they exist), and returns the store. A server that cannot be reached fails
    /// at once with the driver's error (`connection refused`, ...) as [`Error::Open`]'s source,
    /// not after a pool's timeout.
    pub async fn open(mut self) -> Result<PostgresStore, Error> {
        let stripped = match &self.source {
            Source::Url(url) => Some(self.take_url_options(&url.clone())?),
            Source::Pool(_) => None,
        };
        // Validated before anything connects.
        let names = Names::new(&self.schema, &self.table_prefix)?;
        let shown = match &self.source {
            Source::Url(url) => redact_url(url),
            Source::Pool(_) => "(the application's pool)".to_owned(),
        };
        let open_err = |reason: &str, e: sqlx::Error| Error::Open {
            url: shown.clone(),
            reason: format!("{reason}: {e}"),
            source: Some(Box::new(e)),
        };
        let (pool, found, owned) = match self.source.clone() {
            Source::Pool(pool) => {
                let found = async {
                    let mut conn = pool.acquire().await?;
                    prepare(&mut conn, &names, self.migrate).await
                }
                .await;
                let found = match found {
                    Ok(found) => found,
                    Err(e) if self.migrate => return Err(Error::store("migrate", "", &NO_KEY, e)),
                    Err(e) => return Err(open_err("cannot read the database", e)),
                };
                (pool, found, false)
            }
            Source::Url(url) => {
                let stripped = stripped.unwrap_or_else(|| url.clone());
                let mut options = PgConnectOptions::from_str(&stripped)
                    .map_err(|e| open_err("not a PostgreSQL URL", e))?;
                if let Some(name) = &self.application_name {
                    options = options.application_name(name);
                } else if options.get_application_name().is_none() {
                    options = options.application_name("idem");
                }
                // The first connection is made directly, not through the pool: a pool retries a
                // refused connection until its acquire timeout and then reports only the
                // timeout, hiding the cause.
                let mut conn = match tokio::time::timeout(
                    self.acquire_timeout,
                    <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
                )
                .await
                {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return Err(open_err("cannot connect", e)),
                    Err(_) => {
                        return Err(Error::Open {
                            url: shown.clone(),
                            reason: format!(
                                "cannot connect: no answer within {:?}",
                                self.acquire_timeout
                            ),
                            source: None,
                        })
                    }
                };
                let found = prepare(&mut conn, &names, self.migrate).await;
                let _ = sqlx::Connection::close(conn).await;
                let found = match found {
                    Ok(found) => found,
                    Err(e) if self.migrate => {
                        return Err(open_err("cannot migrate the database", e))
                    }
                    Err(e) => return Err(open_err("cannot read the database", e)),
                };
                let pool = PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .min_connections(0)
                    // Statements fail (closed) on a dead connection, and the pool drops it when
                    // it is returned; a ping before every statement would double the round trips.
                    .test_before_acquire(false)
                    .acquire_timeout(self.acquire_timeout)
                    // The server answered just now: the pool's first connection is made here
                    // too, so the first call does not pay for it.
                    .connect_with(options)
                    .await
                    .map_err(|e| open_err("cannot connect", e))?;
                (pool, found, true)
            }
        };
        match found {
            Found::Ready => {}
            Found::NoTables => {
                return Err(Error::Open {
                    url: shown,
                    reason: format!(
                        "no idem tables in schema `{}` (table prefix `{}`)",
                        names.schema, names.prefix
                    ),
                    source: None,
                })
            }
            Found::Version(version) => {
                return Err(Error::Open {
                    url: shown,
                    reason: format!(
                        "the idem tables in schema `{}` have format version {version}, this \
                         build reads only {FORMAT_VERSION}; open it once with a build that \
                         migrates",
                        names.schema
                    ),
                    source: None,
                })
            }
        }
        let notifier = self.notifications.then(|| {
            let listen_pool = PgPoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .test_before_acquire(false)
                .acquire_timeout(self.acquire_timeout)
                .connect_lazy_with((*pool.connect_options()).clone());
            Notifier::new(listen_pool, names.channel.clone())
        });
        let sql = Sql::new(&names);
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                conns: if owned {
                    Connections::owned(pool)
                } else {
                    Connections::shared(pool)
                },
                names,
                sql,
                notifier,
                predictor: Predictor::default(),
            }),
        })
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
    ///
    /// On a caller's transaction, [`Inserted::FloorMoved`] leaves that transaction aborted
    /// (the statement failed); on the pool it is simply a statement to run again.
    pub(crate) async fn claim_new_on<'e>(
        &self,
        exec: impl PgExecutor<'e>,
        req: &ClaimRequest<'_>,
    ) -> Result<Inserted, Error> {
        let row = match claim_query(&self.inner.sql.claim_new, req)
            .fetch_optional(exec)
            .await
        {
            Ok(row) => row,
            // 22012 division_by_zero: the statement's own check that the attempt it took is
            // above the attempt floor as read after the insert (see `sql.rs`).
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("22012") => {
                return Ok(Inserted::FloorMoved)
            }
            Err(e) => return Err(Error::store("claim", req.op, req.key, e)),
        };
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

    /// Runs the claim statement on any executor (a pool, a connection, a caller's transaction).
    pub(crate) async fn claim_on<'e>(
        &self,
        exec: impl PgExecutor<'e>,
        req: &ClaimRequest<'_>,
    ) -> Result<Claimed, Error> {
        let row = claim_query(&self.inner.sql.claim, req)
            .fetch_optional(exec)
            .await
            .map_err(|e| Error::store("claim", req.op, req.key, e))?;
        let Some(row) = row else {
            return Ok(Claimed::NoRecord);
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
            .bind(row.attempt_outcome);
        let waiters = query
            .fetch_optional(exec)
            .await
            .map_err(|e| Error::store("complete", a.op, a.key, e))?;
        Ok(match waiters {
            Some(waiters) => (Fence::Owned, waiters),
            None => (Fence::Lost, false),
        })
    }

    /// Wakes every process waiting for `key` (their listeners hear the key on the channel) and
    /// drops it from their snapshot caches. Best effort: a waiter that misses it polls.
    async fn notify(&self, op: &str, key: &Key) {
        let notified = match self.held("notify", op, key).await {
            Ok(mut held) => {
                let sent = sqlx::query(&self.inner.sql.notify)
                    .bind(&key.0[..])
                    .execute(held.conn())
                    .await
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
    ///
    /// `None` only `in_transaction`: the insert found the attempt floor moved (see `sql.rs`),
    /// which aborted the caller's transaction; begin a new one and claim again.
    async fn claim_with(
        &self,
        conn: &mut sqlx::PgConnection,
        req: &ClaimRequest<'_>,
        in_transaction: bool,
    ) -> Result<Option<Claim>, Error> {
        // Which statement goes first: the insert (a key without a record) or the read (one
        // with a record). Each decides alone; a wrong guess costs one more round trip.
        let predictor = &self.inner.predictor;
        let mut insert = predictor.guess_new(req.op);
        let mut learned = false;
        for _ in 0..CLAIM_TRIES {
            if insert {
                let inserted = self.claim_new_on(&mut *conn, req).await?;
                if !learned {
                    predictor.learn(req.op, inserted != Inserted::HasRecord);
                    learned = true;
                }
                match inserted {
                    Inserted::Acquired(attempt) => {
                        return Ok(Some(Claim::Acquired {
                            attempt,
                            took_over: None,
                        }))
                    }
                    Inserted::FloorMoved if in_transaction => return Ok(None),
                    Inserted::FloorMoved => continue,
                    Inserted::HasRecord => {}
                }
            }
            let claimed = self.claim_on(&mut *conn, req).await?;
            if !learned {
                predictor.learn(req.op, matches!(claimed, Claimed::NoRecord));
                learned = true;
            }
            match claimed {
                Claimed::NoRecord => insert = true,
                Claimed::Changed => insert = false,
                Claimed::Decided { claim, waiters } => {
                    // Not inside a step's transaction: the flag would lock the owner's
                    // record (its heartbeat and completion would wait) until the step rolls
                    // back, which undoes it anyway; a waiting step polls.
                    if let Claim::Running { attempt, .. } = claim {
                        if !waiters && !in_transaction {
                            sqlx::query(&self.inner.sql.flag_waiters)
                                .bind(&req.key.0[..])
                                .bind(attempt_i64(attempt))
                                .execute(&mut *conn)
                                .await
                                .map_err(|e| Error::store("claim", req.op, req.key, e))?;
                        }
                    }
                    return Ok(Some(claim));
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
}

/// What the insert of a key without a record (`claim_new`) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// It inserted the record: the caller owns this attempt.
    Acquired(u64),
    /// The key has a record: run the claim statement.
    HasRecord,
    /// The attempt floor rose past the attempt it took while it ran (a purge or forget of
    /// this key's old row committed in between): it inserted nothing; run it again.
    FloorMoved,
}

/// What the claim statement found.
#[derive(Debug)]
pub(crate) enum Claimed {
    /// The key has no record: insert it (`claim_new`).
    NoRecord,
    /// The record changed under the statement: run it again.
    Changed,
    /// The decision. `waiters`: the running attempt (if any) already has waiters flagged.
    Decided { claim: Claim, waiters: bool },
}

/// Either claim statement with its parameters: $1 key, $2 op, $3 fingerprint, $4 lease ms,
/// $5 worker, $6 ttl ms.
fn claim_query<'q>(
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

/// The error of a claim statement's row that does not decode, naming the operation and key.
fn claim_corrupt<'a>(req: &'a ClaimRequest<'_>) -> impl Fn(String) -> Error + 'a {
    move |reason| Error::Corrupt {
        op: req.op.to_owned(),
        key: *req.key,
        reason,
    }
}

fn attempt_i64(attempt: u64) -> i64 {
    i64::try_from(attempt).unwrap_or(i64::MAX)
}

fn col(e: sqlx::Error) -> String {
    e.to_string()
}

fn fingerprint_of(row: &PgRow) -> Result<Option<Fingerprint>, String> {
    row.try_get::<Option<Vec<u8>>, _>("fingerprint")
        .map_err(col)?
        .map(|b| bytes32(b, "fingerprint").map(Fingerprint))
        .transpose()
}

/// A `timestamptz` column as PostgreSQL sends it in binary: microseconds since 2000-01-01 UTC,
/// `i64::MAX` / `i64::MIN` for `'infinity'` / `'-infinity'`. Compared as they are, so the store
/// judges liveness exactly as the statement did (to the microsecond), and no value (an operator's
/// `'infinity'`, say) can overflow a date type.
fn micros_of(row: &PgRow, column: &str) -> Result<Option<i64>, String> {
    row.try_get_unchecked::<Option<i64>, _>(column).map_err(col)
}

/// Microseconds since 2000-01-01 (PostgreSQL's epoch) as milliseconds since 1970-01-01.
fn unix_millis(pg_micros: i64) -> i64 {
    const PG_EPOCH_UNIX_MILLIS: i64 = 946_684_800_000;
    (pg_micros / 1000).saturating_add(PG_EPOCH_UNIX_MILLIS)
}

/// Decodes the claim statement's row (a record that exists) into a decision. Liveness is
/// judged against the server's `now`, the same instant the statement judged it by.
fn decide(req: &ClaimRequest<'_>, row: &PgRow) -> Result<Claimed, String> {
    if let Some(acquired) = row
        .try_get::<Option<Vec<i64>>, _>("acquired")
        .map_err(col)?
    {
        // `{attempt, taken-over attempt or 0}`, from `<prefix>acquire`.
        let [attempt, took_over] = acquired[..] else {
            return Err(format!("the acquire function returned {acquired:?}"));
        };
        return Ok(Claimed::Decided {
            claim: Claim::Acquired {
                attempt: u64_of(attempt, "attempt")?,
                took_over: (took_over != 0)
                    .then(|| u64_of(took_over, "taken_over_from"))
                    .transpose()?,
            },
            waiters: false,
        });
    }
    let attempt = u64_of(row.try_get("attempt").map_err(col)?, "attempt")?;
    let status = Status::from_str(&row.try_get::<String, _>("status").map_err(col)?)?;
    let now = micros_of(row, "now")?.ok_or("the server's clock is NULL")?;
    let expires_at = micros_of(row, "expires_at")?;
    let lease_until = micros_of(row, "lease_until")?;
    let live_completed = status == Status::Completed && expires_at.is_some_and(|e| e > now);
    let live_running = status == Status::Running && lease_until.is_some_and(|l| l > now);
    if !live_completed && !live_running {
        // The statement judged it claimable (by the same instant, to the microsecond) and
        // called `acquire`, which found a newer version that a concurrent claimer made live.
        return Ok(Claimed::Changed);
    }
    let fingerprint = fingerprint_of(row)?;
    if let (Some(have), Some(want)) = (fingerprint, req.fingerprint) {
        if have != *want {
            return Ok(Claimed::Decided {
                claim: Claim::KeyReuse,
                waiters: false,
            });
        }
    }
    if live_running {
        let left = lease_until.map_or(0, |l| l.saturating_sub(now));
        return Ok(Claimed::Decided {
            claim: Claim::Running {
                attempt,
                lease_left: Duration::from_micros(u64::try_from(left).unwrap_or(0)),
            },
            waiters: row.try_get("waiters").map_err(col)?,
        });
    }
    let bytes: Option<Vec<u8>> = row.try_get("snapshot").map_err(col)?;
    let kind: Option<String> = row.try_get("snapshot_kind").map_err(col)?;
    let (Some(bytes), Some(kind)) = (bytes, kind.as_deref().and_then(SnapshotKind::parse)) else {
        return Err("completed record without a snapshot".into());
    };
    Ok(Claimed::Decided {
        claim: Claim::Completed(Snapshot {
            attempt,
            kind,
            bytes,
            expires_at: expires_at.map_or(i64::MAX, unix_millis),
            fingerprint,
        }),
        waiters: false,
    })
}

fn record_of(row: &PgRow) -> Result<Record, String> {
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
    })
}

fn attempt_log_of(row: &PgRow) -> Result<AttemptLog, String> {
    let outcome: String = row.try_get("outcome").map_err(col)?;
    Ok(AttemptLog {
        attempt: u64_of(row.try_get("attempt").map_err(col)?, "attempt")?,
        worker: row.try_get("worker").map_err(col)?,
        started_at: row.try_get("started_at").map_err(col)?,
        ended_at: row.try_get("ended_at").map_err(col)?,
        outcome: AttemptOutcome::parse(&outcome)
            .ok_or_else(|| format!("unknown attempt outcome `{outcome}`"))?,
        error: row.try_get("error").map_err(col)?,
    })
}

fn corrupt(key: &Key) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Corrupt {
        op: String::new(),
        key: *key,
        reason,
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, Error> {
        if let Some(notifier) = &self.inner.notifier {
            notifier.keep_listening();
        }
        let mut held = self.held("claim", req.op, req.key).await?;
        let claim = self.claim_with(held.conn(), req, false).await?;
        held.done();
        claim.ok_or_else(|| Error::store("claim", req.op, req.key, "the attempt floor kept moving"))
    }

    async fn renew(&self, a: &AttemptRef<'_>, lease: Duration) -> Result<Fence, Error> {
        let mut held = self.held("renew", a.op, a.key).await?;
        let done = sqlx::query(&self.inner.sql.renew)
            .bind(&a.key.0[..])
            .bind(attempt_i64(a.attempt))
            .bind(millis(lease))
            .execute(held.conn())
            .await
            .map_err(|e| Error::store("renew", a.op, a.key, e))?;
        held.done();
        Ok(if done.rows_affected() == 1 {
            Fence::Owned
        } else {
            Fence::Lost
        })
    }

    async fn complete(&self, a: &AttemptRef<'_>, outcome: Outcome<'_>) -> Result<Fence, Error> {
        let mut held = self.held("complete", a.op, a.key).await?;
        let (fence, waiters) = self.complete_on(held.conn(), a, outcome).await?;
        held.done();
        if waiters {
            self.notify(a.op, a.key).await;
        }
        if fence == Fence::Lost {
            let error = outcome.error();
            let mut held = self.held("complete", a.op, a.key).await?;
            sqlx::query(&self.inner.sql.fence_log)
                .bind(&a.key.0[..])
                .bind(attempt_i64(a.attempt))
                .bind(error)
                .execute(held.conn())
                .await
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
        let rows = sqlx::query(&self.inner.sql.list)
            .bind(filter.op.as_deref())
            .bind(filter.status.map(Status::as_str))
            .bind(filter.updated_before)
            .bind(i64::from(filter.limit.unwrap_or(1000)))
            .fetch_all(held.conn())
            .await
            .map_err(|e| Error::store("list", "", &NO_KEY, e))?;
        held.done();
        rows.iter()
            .map(record_of)
            .collect::<Result<_, String>>()
            .map_err(corrupt(&NO_KEY))
    }

    async fn forget(&self, key: &Key, force: bool) -> Result<bool, Error> {
        let mut held = self.held("forget", "", key).await?;
        let row: (i64, Option<String>, Option<i64>) = sqlx::query_as(&self.inner.sql.forget)
            .bind(&key.0[..])
            .bind(force)
            .fetch_one(held.conn())
            .await
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

    async fn release(&self, key: &Key) -> Result<bool, Error> {
        let mut held = self.held("release", "", key).await?;
        let released: i64 = sqlx::query_scalar(&self.inner.sql.release)
            .bind(&key.0[..])
            .fetch_one(held.conn())
            .await
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
        Ok(rows
            .into_iter()
            .map(
                |(op, records, running, stuck, completed, failed, attempts)| {
                    let n = |v: i64| u64::try_from(v).unwrap_or(0);
                    let mut c = OpCounts::new(&op);
                    c.records = n(records);
                    c.running = n(running);
                    c.stuck = n(stuck);
                    c.completed = n(completed);
                    c.failed = n(failed);
                    c.attempts = n(attempts);
                    c
                },
            )
            .collect())
    }

    async fn purge_expired(&self, batch: u32, abandoned_after: Duration) -> Result<u64, Error> {
        let mut held = self.held("purge", "", &NO_KEY).await?;
        let gone: i64 = sqlx::query_scalar(&self.inner.sql.purge)
            .bind(i64::from(batch))
            .bind(millis(abandoned_after))
            .fetch_one(held.conn())
            .await
            .map_err(|e| Error::store("purge", "", &NO_KEY, e))?;
        held.done();
        Ok(u64::try_from(gone).unwrap_or(0))
    }
}
