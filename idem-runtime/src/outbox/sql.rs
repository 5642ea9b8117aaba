//! The outbox table and its statements, per database. The table lives beside the store's own
//! tables (same SQLite file; same PostgreSQL schema and prefix), so a step's transaction covers
//! the store's record, the caller's writes and the message.

use std::time::Duration;

use crate::error::Error;
use crate::step::Conn;

/// A message waiting to be published.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) id: i64,
    pub(crate) msg_id: String,
    pub(crate) destination: String,
    pub(crate) payload: Vec<u8>,
}

type Row = (i64, String, String, Vec<u8>);

fn pending_of(rows: Vec<Row>) -> Vec<Pending> {
    rows.into_iter()
        .map(|(id, msg_id, destination, payload)| Pending {
            id,
            msg_id,
            destination,
            payload,
        })
        .collect()
}

fn db_error(action: &'static str, e: sqlx::Error) -> Error {
    Error::store(action, "outbox", &crate::key::Key([0; 32]), e)
}

/// The outbox's database.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres {
        pool: sqlx::PgPool,
        /// `"schema"."prefixoutbox"`.
        table: String,
        /// `prefixoutbox_pending` (an index lives in its table's schema).
        index: String,
    },
}

#[cfg(feature = "sqlite")]
const SQLITE_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

impl Db {
    #[cfg(feature = "sqlite")]
    pub(crate) fn sqlite(pool: sqlx::SqlitePool) -> Self {
        Db::Sqlite(pool)
    }

    /// The schema and prefix were validated as identifiers when the store opened.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(pool: sqlx::PgPool, schema: &str, prefix: &str) -> Self {
        Db::Postgres {
            pool,
            table: format!("\"{schema}\".\"{prefix}outbox\""),
            index: format!("\"{prefix}outbox_pending\""),
        }
    }

    pub(crate) async fn create(&self) -> Result<(), Error> {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool) => {
                sqlx::raw_sql(
                    "CREATE TABLE IF NOT EXISTS idem_outbox (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        msg_id TEXT NOT NULL UNIQUE,
                        destination TEXT NOT NULL,
                        payload BLOB NOT NULL,
                        created_at INTEGER NOT NULL,
                        sent_at INTEGER
                    );
                    CREATE INDEX IF NOT EXISTS idem_outbox_pending ON idem_outbox (id) WHERE sent_at IS NULL;",
                )
                .execute(pool)
                .await
                .map_err(|e| db_error("create outbox", e))?;
            }
            #[cfg(feature = "postgres")]
            Db::Postgres { pool, table, index } => {
                // Serialized like the store's own migrations: two workers opening at once.
                let sql = format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                        id BIGSERIAL PRIMARY KEY,
                        msg_id TEXT NOT NULL UNIQUE,
                        destination TEXT NOT NULL,
                        payload BYTEA NOT NULL,
                        created_at TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp(),
                        sent_at TIMESTAMPTZ
                    );
                    CREATE INDEX IF NOT EXISTS {index} ON {table} (id) WHERE sent_at IS NULL;"
                );
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(|e| db_error("create outbox", e))?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(table.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("create outbox", e))?;
                sqlx::raw_sql(&sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("create outbox", e))?;
                tx.commit()
                    .await
                    .map_err(|e| db_error("create outbox", e))?;
            }
        }
        Ok(())
    }

    pub(crate) async fn insert(
        &self,
        conn: Conn<'_>,
        msg_id: &str,
        destination: &str,
        payload: &[u8],
    ) -> Result<(), Error> {
        match (self, conn) {
            #[cfg(feature = "sqlite")]
            (Db::Sqlite(_), Conn::Sqlite(conn)) => {
                let sql = format!(
                    "INSERT INTO idem_outbox (msg_id, destination, payload, created_at) \
                     VALUES (?1, ?2, ?3, {SQLITE_NOW_MS}) ON CONFLICT (msg_id) DO NOTHING"
                );
                sqlx::query(&sql)
                    .bind(msg_id)
                    .bind(destination)
                    .bind(payload)
                    .execute(conn)
                    .await
                    .map_err(|e| db_error("enqueue", e))?;
                Ok(())
            }
            #[cfg(feature = "postgres")]
            (Db::Postgres { table, .. }, Conn::Postgres(conn)) => {
                let sql = format!(
                    "INSERT INTO {table} (msg_id, destination, payload) VALUES ($1, $2, $3) \
                     ON CONFLICT (msg_id) DO NOTHING"
                );
                sqlx::query(&sql)
                    .bind(msg_id)
                    .bind(destination)
                    .bind(payload)
                    .execute(conn)
                    .await
                    .map_err(|e| db_error("enqueue", e))?;
                Ok(())
            }
            _ => Err(Error::Config(format!(
                "outbox message {msg_id} for `{destination}`: the connection is not of the \
                 outbox's database (the store's)"
            ))),
        }
    }

    pub(crate) async fn pending(&self) -> Result<u64, Error> {
        let count: i64 = match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM idem_outbox WHERE sent_at IS NULL")
                    .fetch_one(pool)
                    .await
            }
            #[cfg(feature = "postgres")]
            Db::Postgres { pool, table, .. } => {
                sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM {table} WHERE sent_at IS NULL"
                ))
                .fetch_one(pool)
                .await
            }
        }
        .map_err(|e| db_error("count outbox", e))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The oldest `limit` messages not marked sent, in id order.
    pub(crate) async fn next_pending(&self, limit: u32) -> Result<Vec<Pending>, Error> {
        let rows: Vec<Row> = match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT id, msg_id, destination, payload FROM idem_outbox \
                     WHERE sent_at IS NULL ORDER BY id LIMIT ?1",
                )
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
            }
            #[cfg(feature = "postgres")]
            Db::Postgres { pool, table, .. } => {
                sqlx::query_as(&format!(
                    "SELECT id, msg_id, destination, payload FROM {table} \
                     WHERE sent_at IS NULL ORDER BY id LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
            }
        }
        .map_err(|e| db_error("read outbox", e))?;
        Ok(pending_of(rows))
    }

    /// Marks exactly these messages sent (never a range: on PostgreSQL a lower id can commit
    /// after a higher one, and must not be marked before it was published).
    pub(crate) async fn mark_sent(&self, ids: &[i64]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool) => {
                let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                sqlx::query(&format!(
                    "UPDATE idem_outbox SET sent_at = {SQLITE_NOW_MS} WHERE id IN ({list})"
                ))
                .execute(pool)
                .await
                .map(|_| ())
            }
            #[cfg(feature = "postgres")]
            Db::Postgres { pool, table, .. } => sqlx::query(&format!(
                "UPDATE {table} SET sent_at = statement_timestamp() WHERE id = ANY($1)"
            ))
            .bind(ids)
            .execute(pool)
            .await
            .map(|_| ()),
        }
        .map_err(|e| db_error("mark outbox sent", e))?;
        Ok(())
    }

    pub(crate) async fn purge_sent(&self, older_than: Duration) -> Result<u64, Error> {
        let ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let done = match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool) => {
                sqlx::query(&format!(
                    "DELETE FROM idem_outbox WHERE sent_at IS NOT NULL AND sent_at <= {SQLITE_NOW_MS} - ?1"
                ))
                .bind(ms)
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
            }
            #[cfg(feature = "postgres")]
            Db::Postgres { pool, table, .. } => {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE sent_at IS NOT NULL \
                     AND sent_at <= statement_timestamp() - make_interval(secs => $1::float8 / 1000)"
                ))
                .bind(ms)
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
            }
        }
        .map_err(|e| db_error("purge outbox", e))?;
        Ok(done)
    }
}
