//! The PostgreSQL baseline: the minimal statements, prepared, on a pool like idem's.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{Baseline, Snapshot};

/// Hand-written PostgreSQL idempotency, in its own table.
#[derive(Debug, Clone)]
pub struct PostgresBaseline {
    pool: PgPool,
}

impl PostgresBaseline {
    /// Connects with `max_connections` and no ping on acquire, and creates the table.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS idem_bench_baseline (
                 key bytea PRIMARY KEY, status text NOT NULL, attempt int8 NOT NULL,
                 snapshot bytea, lease_until timestamptz, expires_at timestamptz)",
        )
        .execute(&pool)
        .await?;
        sqlx::query(APP_TABLE).execute(&pool).await?;
        Ok(Self { pool })
    }
}

/// The application table a transactional step writes one row to (both sides of `--mode step`).
pub const APP_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS idem_bench_app_rows (key bytea NOT NULL, n int8 NOT NULL)";
/// The application's insert: $1 key.
pub const APP_INSERT: &str = "INSERT INTO idem_bench_app_rows (key, n) VALUES ($1, 1)";

impl PostgresBaseline {
    /// Deletes every row, so a run starts from an empty table.
    pub async fn empty(&self) -> Result<(), sqlx::Error> {
        sqlx::query("TRUNCATE idem_bench_baseline, idem_bench_app_rows")
            .execute(&self.pool)
            .await
            .map(drop)
    }
}

/// Claim a fresh key: $1 key.
const CLAIM: &str = "INSERT INTO idem_bench_baseline (key, status, attempt, lease_until)
     VALUES ($1, 'running', 1, now() + interval '30 seconds') ON CONFLICT DO NOTHING";
/// Record its snapshot, fenced: $1 key, $2 snapshot.
const COMPLETE: &str =
    "UPDATE idem_bench_baseline SET status = 'completed', snapshot = $2, lease_until = NULL,
         expires_at = now() + interval '1 day'
     WHERE key = $1 AND attempt = 1 AND status = 'running'";

impl Baseline for PostgresBaseline {
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
        let mut tx = self.pool.begin().await?;
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
            "SELECT snapshot FROM idem_bench_baseline WHERE key = $1 AND status = 'completed'",
        )
        .bind(&key[..])
        .fetch_optional(&self.pool)
        .await
        .map(Option::flatten)
    }
}
