//! The SQLite record format (versioned migrations) and how a store brings a database up to date.
//!
//! Format version 1 (see `ARCHITECTURE.md`, "Persisted format"):
//! - `idem_records`: one row per key; `key` is the 32 raw key bytes; times are milliseconds since
//!   the Unix epoch by SQLite's clock; `snapshot` is the JSON encoding of the recorded value.
//! - `idem_attempts`: one row per attempt, kept by triggers, so the log is written in the same
//!   statement as the record change and can never disagree with it.
//! - `idem_meta`: `attempt_floor`, the highest attempt number ever deleted, so that attempt
//!   numbers (fencing tokens) never go backwards across purge and forget.
//! - `idem_schema`: the applied format version.

use sqlx::{Connection, SqliteConnection};

/// SQLite's clock, in milliseconds since the Unix epoch. `'now'` is fixed for the duration of
/// one statement, so every use in a statement agrees.
pub(super) const NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// The format versions, in order; each is applied once, in one transaction.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    r"
CREATE TABLE idem_meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO idem_meta (name, value) VALUES ('attempt_floor', 0);

CREATE TABLE idem_records (
    key             BLOB PRIMARY KEY CHECK (length(key) = 32),
    op              TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    attempt         INTEGER NOT NULL CHECK (attempt > 0),
    taken_over_from INTEGER,
    fingerprint     BLOB,
    snapshot        BLOB,
    snapshot_kind   TEXT CHECK (snapshot_kind IN ('ok', 'err')),
    error           TEXT,
    lease_until     INTEGER,
    worker          TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    expires_at      INTEGER
) WITHOUT ROWID;
CREATE INDEX idem_records_expires ON idem_records (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX idem_records_abandoned ON idem_records (lease_until) WHERE status = 'running';
-- `op` never changes after insert, so this index costs nothing on claims and completes.
CREATE INDEX idem_records_op ON idem_records (op);

CREATE TABLE idem_attempts (
    key        BLOB NOT NULL,
    attempt    INTEGER NOT NULL,
    worker     TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER,
    outcome    TEXT NOT NULL,
    error      TEXT,
    PRIMARY KEY (key, attempt)
) WITHOUT ROWID;

CREATE TRIGGER idem_attempt_first AFTER INSERT ON idem_records BEGIN
    INSERT INTO idem_attempts (key, attempt, worker, started_at, outcome)
    VALUES (NEW.key, NEW.attempt, coalesce(NEW.worker, ''), NEW.updated_at, 'running');
END;

CREATE TRIGGER idem_attempt_next AFTER UPDATE OF attempt ON idem_records
WHEN NEW.attempt <> OLD.attempt BEGIN
    UPDATE idem_attempts SET outcome = 'abandoned', ended_at = NEW.updated_at
    WHERE key = OLD.key AND attempt = OLD.attempt AND outcome = 'running';
    INSERT OR REPLACE INTO idem_attempts (key, attempt, worker, started_at, outcome)
    VALUES (NEW.key, NEW.attempt, coalesce(NEW.worker, ''), NEW.updated_at, 'running');
END;

CREATE TRIGGER idem_attempt_end AFTER UPDATE OF status ON idem_records
WHEN OLD.status = 'running' AND NEW.status <> 'running' AND NEW.attempt = OLD.attempt BEGIN
    UPDATE idem_attempts
    SET outcome = CASE WHEN NEW.status = 'completed' AND NEW.snapshot_kind = 'ok'
                       THEN 'completed' ELSE 'failed' END,
        ended_at = NEW.updated_at,
        error = NEW.error
    WHERE key = NEW.key AND attempt = NEW.attempt;
END;

CREATE TRIGGER idem_attempt_forget AFTER DELETE ON idem_records BEGIN
    DELETE FROM idem_attempts WHERE key = OLD.key;
END;
",
)];

/// The newest format version this build writes.
pub const FORMAT_VERSION: i64 = 1;

/// Applies every missing migration. Safe when several processes open the same file at once:
/// `BEGIN IMMEDIATE` takes the write lock before the version is read.
pub(super) async fn migrate(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let current: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM idem_schema")
        .fetch_optional(&mut *conn)
        .await
        .or_else(|e| match &e {
            // Table missing: a new database.
            sqlx::Error::Database(db) if db.message().contains("no such table") => Ok(None),
            _ => Err(e),
        })?
        .flatten();
    if current == Some(FORMAT_VERSION) {
        return Ok(());
    }

    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS idem_schema (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: i64 = sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM idem_schema")
        .fetch_one(&mut *tx)
        .await?;
    if current > FORMAT_VERSION {
        return Err(sqlx::Error::Protocol(format!(
            "the database has idem format version {current}, newer than this build's {FORMAT_VERSION}; upgrade idem"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        sqlx::Executor::execute(&mut *tx, *sql).await?;
        sqlx::query(&format!(
            "INSERT INTO idem_schema (version, applied_at) VALUES (?1, {NOW})"
        ))
        .bind(version)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
