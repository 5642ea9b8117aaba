//! The AI pipeline of the `ai_pipeline` example: preprocess -> generate a draft (an HTTP call to
//! a model that bills per generation) -> save it (a plain INSERT) -> notify (an outbox row).
//! The same steps run with `#[idempotent]` or without it, under the same seeded faults.

pub(crate) mod model_client;
pub(crate) mod model_server;
pub(crate) mod steps;

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;

/// A deterministic number from a seed and some labels (the fault schedule).
pub(crate) fn chance(seed: u64, parts: &[&str]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// One item of the batch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Input {
    /// A stable id (the key).
    pub(crate) id: String,
    /// The article title.
    pub(crate) title: String,
    /// The target language.
    pub(crate) lang: String,
}

const TOPICS: &[&str] = &[
    "Idempotency keys for LLM calls",
    "Retries with exponential backoff",
    "Zombie tasks stuck in processing",
    "Fencing tokens explained",
    "Exactly-once is a lie, mostly",
    "Outbox pattern in practice",
    "Leases and heartbeats",
    "Why the first request saved twice",
];
const LANGS: &[&str] = &["en", "de", "fr"];

/// The batch: `n` inputs.
pub(crate) fn batch(n: usize) -> Vec<Input> {
    (0..n)
        .map(|i| Input {
            id: format!("in-{i:03}"),
            title: TOPICS[i % TOPICS.len()].to_owned(),
            lang: LANGS[(i / TOPICS.len()) % LANGS.len()].to_owned(),
        })
        .collect()
}

/// Opens (creating) the application database: `drafts` and `outbox`, with NO unique
/// constraints, so a duplicate save is a duplicate row.
pub(crate) async fn open_app_db(path: &std::path::Path) -> Result<SqlitePool, sqlx::Error> {
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
