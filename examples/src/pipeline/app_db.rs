//! The application's own database (SQLite): `drafts` and `outbox`, and the tally of what a run
//! left in it.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// Opens (creating) the application database: `drafts` and `outbox`, with NO unique
/// constraints, so a duplicate save is a duplicate row.
pub(crate) async fn open(path: &std::path::Path) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS drafts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            input_id TEXT NOT NULL,
            lang TEXT NOT NULL,
            body TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            worker TEXT NOT NULL
        )",
    )
    .execute(&pool)
    .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            input_id TEXT NOT NULL,
            draft_id INTEGER NOT NULL,
            payload TEXT NOT NULL
        )",
    )
    .execute(&pool)
    .await?;
    Ok(pool)
}

/// What the application database holds after a run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct Tally {
    /// Rows in `drafts`.
    pub(crate) rows: i64,
    /// Rows beyond one per input.
    pub(crate) duplicate_rows: i64,
    /// Rows in `outbox`.
    pub(crate) notifications: i64,
    /// Notifications beyond one per input.
    pub(crate) duplicate_notifications: i64,
    /// Inputs with at least one notification (finished).
    pub(crate) finished: i64,
}

/// Counts rows and duplicates.
pub(crate) async fn tally(pool: &SqlitePool) -> Result<Tally, sqlx::Error> {
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT input_id) FROM drafts")
            .fetch_one(pool)
            .await?;
    let (notes, finished): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT input_id) FROM outbox")
            .fetch_one(pool)
            .await?;
    Ok(Tally {
        rows,
        duplicate_rows: rows - distinct,
        notifications: notes,
        duplicate_notifications: notes - finished,
        finished,
    })
}
