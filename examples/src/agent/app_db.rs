//! The agent's application database (SQLite): the `rows` table the `write_row` tool inserts
//! into, with no unique constraint, so a duplicate write is a duplicate row. Runs share it (the
//! reference run and the crashed one); each row names its run.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// Opens (creating) the application database.
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
        "CREATE TABLE IF NOT EXISTS rows (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            call_id TEXT NOT NULL,
            title TEXT NOT NULL,
            score REAL NOT NULL,
            tags TEXT NOT NULL
        )",
    )
    .execute(&pool)
    .await?;
    Ok(pool)
}

/// A run's rows, and its rows beyond one per tool call.
pub(crate) async fn tally(pool: &SqlitePool, run_id: &str) -> Result<(i64, i64), sqlx::Error> {
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT call_id) FROM rows WHERE run_id = ?")
            .bind(run_id)
            .fetch_one(pool)
            .await?;
    Ok((rows, rows - distinct))
}
