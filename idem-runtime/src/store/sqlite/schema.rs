//! The SQLite record format (versioned migrations) and how a store brings a database up to date.
//!
//! Format version 1 (see `ARCHITECTURE.md`, "Persisted format"):
//! - `idem_records`: one row per key; `key` is the 32 raw key bytes; times are milliseconds since
//!   the Unix epoch by SQLite's clock; `snapshot` is the JSON encoding of the recorded value.
//! - `idem_attempts`: one row per *past* attempt (the current one is the record's
//!   `attempt_*` columns), moved there by a trigger in the same statement as the claim that
//!   replaces it, so the log can never disagree with the record.
//! - `idem_meta`: `attempt_floor`, the highest attempt number ever deleted, so that attempt
//!   numbers (fencing tokens) never go backwards across purge and forget.
//! - `idem_schema`: the applied format version.
//!
//! Format version 2 adds the stream journal:
//! - `idem_chunks`: one row per journaled chunk of a streamed result: `key`, `attempt`, `seq`
//!   (the chunk number, from 0), `offset_ms` (when the producer yielded it, in milliseconds since
//!   the attempt's stream began), `chunk` (its JSON encoding); primary key `(key, attempt, seq)`,
//!   so a retried append of the same chunk numbers is ignored, and a read of one attempt's
//!   stream is one range of the primary key.
//! - The trigger `idem_chunks_forget` deletes a key's chunks with its record, so every path that
//!   deletes a record (forget, purge) needs no statement of its own. No path replaces a record
//!   by other means: a claim of a key with a record is an upsert (`ON CONFLICT DO UPDATE`, which
//!   deletes nothing), and the chunks of the attempts it replaces are dropped by the new
//!   attempt's first append.
//!
//! Format version 3 adds the link of a step to its parent:
//! - `idem_records.parent` (the 32 key bytes of the call whose body made the record's first
//!   call, or NULL) and `idem_records.position` (its position among that body's steps, from
//!   0), written by the claim that creates the record and never changed; the partial index
//!   `idem_records_parent` lists a run's steps in order.
//! - `idem_records.cost`, `idem_attempts.cost`: what an attempt cost, as its body reported it (a
//!   JSON object of unit to amount, or NULL); the trigger moving a replaced attempt to the log
//!   now carries its cost.
//! - `idem_costs_avoided (op, unit, amount, replays)`: what replays avoided, added up by each
//!   process in batches.
//!
//! Format version 4 adds `idem_records_costed (op) WHERE cost IS NOT NULL`: the records with
//! a cost, for the cost ledger's read on big tables (a record without a cost adds no entry).
//! Built by the migration inside its write transaction: other writers wait while it runs
//! (seconds per million records). `stats` and `list --op` scan the records: an index serving
//! them would cost every claim and completion a page write.

use sqlx::{Connection, SqliteConnection};

/// SQLite's clock, in milliseconds since the Unix epoch. `'now'` is fixed for the duration of
/// one statement, so every use in a statement agrees.
pub(super) const NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// The format versions, in order; each is applied once, in one transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r"
CREATE TABLE idem_meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO idem_meta (name, value) VALUES ('attempt_floor', 0);

CREATE TABLE idem_records (
    key                BLOB PRIMARY KEY CHECK (length(key) = 32),
    op                 TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    attempt            INTEGER NOT NULL CHECK (attempt > 0),
    taken_over_from    INTEGER,
    fingerprint        BLOB,
    snapshot           BLOB,
    snapshot_kind      TEXT CHECK (snapshot_kind IN ('ok', 'err')),
    error              TEXT,
    lease_until        INTEGER,
    worker             TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    expires_at         INTEGER,
    attempt_started_at INTEGER NOT NULL,
    attempt_outcome    TEXT NOT NULL
) WITHOUT ROWID;
-- The only secondary index: purge finds expired records without a scan. Every index is one
-- more B-tree page written per claim and per completion, so listing by `op` and finding
-- abandoned running records (both operator actions) scan instead.
CREATE INDEX idem_records_expires ON idem_records (expires_at) WHERE expires_at IS NOT NULL;

-- The log of *past* attempts of a key. The current attempt is the record itself (its
-- `attempt`, `worker`, `attempt_started_at`, `attempt_outcome`), so the common case, a key
-- claimed and completed once, writes no log row at all; a later claim moves the attempt it
-- replaces here, in the same statement (trigger).
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

CREATE TRIGGER idem_attempt_past AFTER UPDATE OF attempt ON idem_records
WHEN NEW.attempt <> OLD.attempt BEGIN
    INSERT OR REPLACE INTO idem_attempts (key, attempt, worker, started_at, ended_at, outcome, error)
    VALUES (OLD.key, OLD.attempt, coalesce(OLD.worker, ''), OLD.attempt_started_at,
            CASE WHEN OLD.status = 'running' THEN NEW.updated_at ELSE OLD.updated_at END,
            CASE WHEN OLD.status = 'running' THEN 'abandoned' ELSE OLD.attempt_outcome END,
            OLD.error);
END;

CREATE TRIGGER idem_attempt_forget AFTER DELETE ON idem_records BEGIN
    DELETE FROM idem_attempts WHERE key = OLD.key;
END;
",
    ),
    (
        2,
        r"
-- The stream journal: the chunks of a streamed result, one row each, in the order of `seq`.
-- Keyed by (key, attempt, seq): a retried append of a chunk number is ignored, and reading an
-- attempt's stream is one range of the primary key. No rowid: the primary key is the row.
CREATE TABLE idem_chunks (
    key       BLOB NOT NULL,
    attempt   INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    offset_ms INTEGER NOT NULL,
    chunk     BLOB NOT NULL,
    PRIMARY KEY (key, attempt, seq)
) WITHOUT ROWID;

-- Chunks go with their record: forget and purge delete records, and this deletes their
-- chunks in the same statement.
CREATE TRIGGER idem_chunks_forget AFTER DELETE ON idem_records BEGIN
    DELETE FROM idem_chunks WHERE key = OLD.key;
END;
",
    ),
    (
        3,
        r"
-- Steps inside steps: the call whose body made a record's first call, and its position among
-- that body's steps. Set when the record is created, never changed.
ALTER TABLE idem_records ADD COLUMN parent BLOB CHECK (parent IS NULL OR length(parent) = 32);
ALTER TABLE idem_records ADD COLUMN position INTEGER;
-- A run's steps, in order, without a scan. Partial: a top-level call adds no index entry.
CREATE INDEX idem_records_parent ON idem_records (parent, position) WHERE parent IS NOT NULL;

-- The cost ledger. What an attempt cost, as its body reported it (a JSON object of unit to
-- amount, or NULL): the current attempt's on the record, past ones' in the log, moved there by
-- the trigger, now with their cost.
ALTER TABLE idem_records ADD COLUMN cost TEXT;
ALTER TABLE idem_attempts ADD COLUMN cost TEXT;
DROP TRIGGER idem_attempt_past;
CREATE TRIGGER idem_attempt_past AFTER UPDATE OF attempt ON idem_records
WHEN NEW.attempt <> OLD.attempt BEGIN
    INSERT OR REPLACE INTO idem_attempts (key, attempt, worker, started_at, ended_at, outcome, error, cost)
    VALUES (OLD.key, OLD.attempt, coalesce(OLD.worker, ''), OLD.attempt_started_at,
            CASE WHEN OLD.status = 'running' THEN NEW.updated_at ELSE OLD.updated_at END,
            CASE WHEN OLD.status = 'running' THEN 'abandoned' ELSE OLD.attempt_outcome END,
            OLD.error, OLD.cost);
END;
-- What replays avoided, by operation and unit, added up by each process in batches.
CREATE TABLE idem_costs_avoided (
    op      TEXT NOT NULL,
    unit    TEXT NOT NULL,
    amount  REAL NOT NULL,
    replays INTEGER NOT NULL,
    PRIMARY KEY (op, unit)
) WITHOUT ROWID;
",
    ),
    (
        4,
        r"
-- The records that carry a cost, for `stats`'s cost ledger. Partial: a record without a cost
-- adds no entry.
CREATE INDEX idem_records_costed ON idem_records (op) WHERE cost IS NOT NULL;
",
    ),
];

/// The newest format version this build writes.
pub const FORMAT_VERSION: i64 = 4;

/// The format version of the database's idem tables, or `None` when it has none. Reads only.
pub(super) async fn check(conn: &mut SqliteConnection) -> Result<Option<i64>, sqlx::Error> {
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'idem_schema')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !has_table {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT max(version) FROM idem_schema")
        .fetch_one(&mut *conn)
        .await
}

/// Applies every missing migration. Safe when several processes open the same file at once:
/// `BEGIN IMMEDIATE` takes the write lock before the version is read.
pub(super) async fn migrate(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    // Read without a lock first: a database already up to date (every open but the first)
    // takes no write lock.
    if check(&mut *conn).await? == Some(FORMAT_VERSION) {
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
