//! The SQLite baseline: the same pool settings idem uses, the minimal statements.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{Baseline, Snapshot};

/// Hand-written SQLite idempotency, in its own table of the same database file.
#[derive(Debug, Clone)]
pub struct SqliteBaseline {
    pool: SqlitePool,
}

impl SqliteBaseline {
    /// Opens `url` with idem's pool settings and creates the baseline table.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS baseline_records (
                 key BLOB PRIMARY KEY, status TEXT NOT NULL, attempt INTEGER NOT NULL,
                 snapshot BLOB, lease_until INTEGER, expires_at INTEGER) WITHOUT ROWID",
        )
        .execute(&pool)
        .await?;
        sqlx::query(APP_TABLE).execute(&pool).await?;
        Ok(Self { pool })
    }
}

/// The application table a transactional step writes one row to (both sides of `--mode step`).
pub const APP_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS bench_app_rows (key BLOB NOT NULL, n INTEGER NOT NULL)";
/// The application's insert: ?1 key.
pub const APP_INSERT: &str = "INSERT INTO bench_app_rows (key, n) VALUES (?1, 1)";

/// Claim a fresh key: ?1 key.
const CLAIM: &str = "INSERT INTO baseline_records (key, status, attempt, lease_until)
     VALUES (?1, 'running', 1, unixepoch() * 1000 + 30000) ON CONFLICT DO NOTHING";
/// Record its snapshot, fenced: ?1 key, ?2 snapshot.
const COMPLETE: &str = "UPDATE baseline_records SET status = 'completed', snapshot = ?2,
         lease_until = NULL, expires_at = unixepoch() * 1000 + 86400000
     WHERE key = ?1 AND attempt = 1 AND status = 'running'";

impl Baseline for SqliteBaseline {
    async fn miss(&self, key: &[u8; 32], snapshot: &[u8]) -> Result<(), sqlx::Error> {
        sqlx::query(CLAIM)
            .bind(&key[..])
            .execute(&self.pool)
            .await?;
        sqlx::query(COMPLETE)
            .bind(&key[..])
            .bind(snapshot)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn step(&self, key: &[u8; 32], snapshot: &[u8]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(CLAIM).bind(&key[..]).execute(&mut *tx).await?;
        sqlx::query(APP_INSERT)
            .bind(&key[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query(COMPLETE)
            .bind(&key[..])
            .bind(snapshot)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    async fn hit(&self, key: &[u8; 32]) -> Result<Option<Snapshot>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT snapshot FROM baseline_records WHERE key = ?1 AND status = 'completed'",
        )
        .bind(&key[..])
        .fetch_optional(&self.pool)
        .await
        .map(Option::flatten)
    }
}
