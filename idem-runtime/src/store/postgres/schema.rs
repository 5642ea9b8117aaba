//! The PostgreSQL record format (versioned migrations), the validated names it lives under, and
//! how a store brings a database up to date, safely when many workers start at once.
//!
//! # Persisted format, version 8
//!
//! Version 1 created the tables below; version 2 (applied on top of it, in the same way on new
//! and old databases) drops the records table's CHECK constraints and adds the
//! `<prefix>acquire` function; version 3 mirrors the attempt floor in the sequence
//! `<prefix>attempt_floor`; version 4 lets the attempts log say `cancelled`; version 5 adds
//! the `<prefix>renumber` function; version 6 adds the stream journal (`<prefix>chunks`) and
//! the trigger that deletes its rows with their record.
//!
//! Everything lives in one schema (default `public`, see `PostgresStoreBuilder::schema`) under
//! one table-name prefix (default `idem_`). Both are validated as plain lower-case identifiers
//! (`[a-z_][a-z0-9_]*`) *and* double-quoted in every statement, so configuration can never
//! inject SQL. With the defaults the tables are:
//!
//! - `idem_records`: one row per key.
//!   - `key bytea` primary key (the 32 raw key bytes), `op text`, `status text`
//!     (`running` / `completed` / `failed`), `attempt bigint` (the fencing token; only grows),
//!     `taken_over_from bigint` (the attempt a takeover replaced, for the log), `fingerprint bytea`
//!     (32 bytes or NULL), `snapshot bytea` (the JSON encoding of the recorded value),
//!     `snapshot_kind text` (`ok` / `err`), `error text`, `lease_until timestamptz`, `worker text`,
//!     `created_at`, `updated_at`, `expires_at timestamptz`, `waiters boolean` (a caller was told
//!     `running` during this attempt: its completion must NOTIFY), and the current attempt's
//!     log line: `attempt_started_at timestamptz`, `attempt_outcome text` (`running` /
//!     `completed` / `failed` / `released` / `cancelled`).
//!   - Every time is the **server's** clock (`statement_timestamp()`): a worker's clock is never
//!     sent, so a skewed worker can neither steal a live lease nor keep a dead one.
//!   - `fillfactor = 80`: each page keeps room for new row versions, so updates that touch no
//!     indexed column are HOT (heap-only: no index insertions, no index bloat).
//!   - No CHECK constraints (since version 2): PostgreSQL parses every CHECK expression again on
//!     each INSERT and UPDATE (`ExecConstraints` -> `stringToNode`, a large share of the
//!     server's CPU per claimed and completed key; docs/performance.md). Readers validate instead: a row with an
//!     unknown status, a short key or fingerprint, or a completed row without a snapshot is
//!     `Error::Corrupt` naming the key, never a panic or a silent re-run.
//! - `idem_attempts`: one row per *past* attempt (`key`, `attempt`, `worker`, `started_at`,
//!   `ended_at`, `outcome` = `completed` / `failed` / `abandoned` / `fenced` / `released` /
//!   `cancelled`, `error`), primary key `(key, attempt)`. The current attempt is the record's `attempt_*`
//!   columns, so a key claimed and completed once (the common case) writes no log row; a claim
//!   that replaces an attempt moves it here through the trigger `<prefix>past_attempt`, in the
//!   same statement, so the log can never disagree with the record, and the claim and complete
//!   statements write one row (docs/performance.md has what that saved).
//! - `idem_meta`: `attempt_floor`, the highest attempt number ever deleted (by purge or forget),
//!   updated in the same statement as the delete, so a key's next attempt starts above it and
//!   fencing tokens never go backwards.
//! - `idem_attempt_floor` (a sequence, since version 3): a copy of `attempt_floor` that the claim
//!   of a new key reads without a subquery (`pg_sequence_last_value`). The trigger
//!   `<prefix>mirror_floor` on `idem_meta` raises it in every transaction that raises the floor,
//!   before that transaction commits; being non-transactional, the raise is visible at once. So
//!   the mirror is never below an attempt whose row is gone. The role that runs workers needs
//!   `USAGE` and `UPDATE` on it, as it needs them on the tables.
//! - `idem_chunks` (since version 6): the stream journal, one row per chunk of a streamed
//!   result: `key bytea`, `attempt bigint`, `seq bigint` (the chunk number, from 0),
//!   `offset_ms integer` (when the producer yielded it, in milliseconds since the attempt's
//!   stream began), `chunk bytea` (its JSON encoding); primary key `(key, attempt, seq)`, so a
//!   retried append of the same chunk numbers does nothing and a read of one attempt's stream is
//!   one index range. No CHECK constraints, for the records table's reason: readers validate.
//!   The trigger `<prefix>chunks_gone` (`AFTER DELETE` on the records table, per row; per
//!   statement since version 8) deletes a
//!   key's chunks with its record, so forget, purge and every other delete need no statement of
//!   their own. A claim that replaces an attempt deletes nothing (an upsert); the new attempt's
//!   first append drops the earlier attempts' chunks.
//! - `idem_schema`: the applied format versions (`version`, `applied_at`).
//! - `idem_records.parent`, `idem_records.position` (since version 7): the key of the call
//!   whose body made the record's first call, and its position among that body's steps (from
//!   0), or NULL; set by the insert that creates the record and never changed. The partial
//!   index `idem_records_parent (parent, position) WHERE parent IS NOT NULL` lists a run's
//!   steps.
//! - `idem_records.cost`, `idem_attempts.cost` (since version 7): what an attempt cost, as its
//!   body reported it (a JSON object of unit to amount, as text, or NULL). `<prefix>acquire`
//!   clears it for the new attempt and the log trigger carries it with a replaced attempt.
//! - `idem_costs_avoided (op, unit, amount, replays)` (since version 7): what replays avoided,
//!   added up by each process in batches.
//! - Version 8 adds the partial index `<prefix>records_costed (op) WHERE cost IS NOT NULL`
//!   (the cost ledger's read; records without a cost add no entry) and makes
//!   `<prefix>chunks_gone` a statement trigger (one join per deleting statement instead of a
//!   call per row). Its migration builds the index under the records table's SHARE lock
//!   (writers wait; docs/migrating.md has how to build it beforehand).
//! - `<prefix>acquire(key, op, fingerprint, lease_ms, worker, ttl_ms) -> bigint[]`: the write
//!   half of a claim of a key whose record is not live (an upsert that takes a new attempt;
//!   `{attempt, taken-over attempt or 0}`, or NULL when a concurrent claimer won). The claim
//!   statement calls it only then, so replays and waits execute no INSERT at all.
//! - `<prefix>renumber(key) -> bigint` (since version 5): gives the record that the claim of a
//!   new key has just inserted, in the same statement, an attempt above the attempt floor, when
//!   a purge or forget raised the floor while that insert waited for it. The insert calls it only
//!   then; nothing else may.
//!
//! ## Indexes, and why so few
//!
//! The hot writes are the heartbeat (`renew`: changes only `lease_until`) and the claim of a new
//! key (an insert). `lease_until` is in **no** index, so every heartbeat is a HOT update. Besides
//! the primary key:
//!
//! - `idem_records_expires (expires_at) WHERE expires_at IS NOT NULL`: purge finds expired
//!   completed and failed records without a scan, batch after batch from where the last ended
//!   (`purge.rs`). A claim sets a provisional `expires_at` (ttl plus a slack of the lease, at
//!   most 1% of the ttl), so a completion within the slack leaves it unchanged; a later one sets
//!   `now + ttl`. A completed record therefore lives between ttl and ttl + 1%.
//! - `idem_records_costed (op) WHERE cost IS NOT NULL` (since version 8): the records with a
//!   cost, for the cost ledger; records without one add no entry.
//!
//! Listing by operation and `stats` scan the records: an index on `op` and `updated_at` (or a
//! summary kept by triggers) was measured at 20–28% of miss throughput (a completion stops being
//! a HOT update), too much for an operator's read.
//! Abandoned running records (lease expired) have no index (it would cost every heartbeat):
//! purge sweeps the table's pages once per purge, a bounded window per statement.
//!
//! ## Notifications
//!
//! A completion whose record has `waiters` set, and every release and forget, also runs
//! `pg_notify(channel, encode(key, 'hex'))` in the same transaction. Completions nobody waits
//! for do not notify: a notifying commit holds the cluster-wide notify lock across its WAL
//! flush, which serializes every completing client of the cluster. The channel is
//! `idem_` followed by 16 hex digits of a blake3 hash of `schema.prefix` (stable across processes,
//! always a valid channel name). Waiting callers `LISTEN` on it (see the store's module docs).
//!
//! ## Migrations
//!
//! Versions are applied in order, each once, inside one transaction that first takes
//! `pg_advisory_xact_lock` on a key derived from the schema and prefix: many workers starting at
//! once serialize there, and all but the first find the work done. A database whose version is
//! newer than this build refuses to open.

use sqlx::{Connection, PgConnection};

use crate::error::Error;

/// The newest format version this build writes.
pub const FORMAT_VERSION: i32 = 8;

/// The format versions, in order. `{records}`, `{attempts}`, `{meta}`, `{chunks}` are replaced
/// by the quoted, schema-qualified table names, `{prefix}` by the (validated) table prefix.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE {meta} (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO {meta} (name, value) VALUES ('attempt_floor', 0);

CREATE TABLE {records} (
    key             bytea PRIMARY KEY CHECK (octet_length(key) = 32),
    op              text NOT NULL,
    status          text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    attempt         bigint NOT NULL CHECK (attempt > 0),
    taken_over_from bigint,
    fingerprint     bytea CHECK (octet_length(fingerprint) = 32),
    snapshot        bytea,
    snapshot_kind   text CHECK (snapshot_kind IN ('ok', 'err')),
    error           text,
    lease_until     timestamptz,
    worker          text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    expires_at      timestamptz,
    waiters         boolean NOT NULL DEFAULT false,
    attempt_started_at timestamptz NOT NULL,
    attempt_outcome text NOT NULL CHECK (attempt_outcome IN
                        ('running', 'completed', 'failed', 'released'))
) WITH (fillfactor = 80);
CREATE INDEX "{prefix}records_expires" ON {records} (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE {attempts} (
    key        bytea NOT NULL,
    attempt    bigint NOT NULL,
    worker     text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    outcome    text NOT NULL CHECK (outcome IN
                   ('running', 'completed', 'failed', 'abandoned', 'fenced', 'released')),
    error      text,
    PRIMARY KEY (key, attempt)
) WITH (fillfactor = 80);

-- The current attempt is the record itself (`attempt`, `worker`, `attempt_started_at`,
-- `attempt_outcome`), so a key claimed and completed once writes no log row: a claim that
-- replaces an attempt moves the old one here, in the same statement.
CREATE FUNCTION "{schema}"."{prefix}log_past_attempt"() RETURNS trigger LANGUAGE plpgsql AS $idem$
BEGIN
    INSERT INTO {attempts} (key, attempt, worker, started_at, ended_at, outcome, error)
    VALUES (OLD.key, OLD.attempt, coalesce(OLD.worker, ''), OLD.attempt_started_at,
            CASE WHEN OLD.status = 'running' THEN NEW.updated_at ELSE OLD.updated_at END,
            CASE WHEN OLD.status = 'running' THEN 'abandoned' ELSE OLD.attempt_outcome END,
            OLD.error)
    ON CONFLICT (key, attempt) DO NOTHING;
    RETURN NULL;
END
$idem$;
CREATE TRIGGER "{prefix}past_attempt" AFTER UPDATE OF attempt ON {records}
    FOR EACH ROW WHEN (NEW.attempt <> OLD.attempt)
    EXECUTE FUNCTION "{schema}"."{prefix}log_past_attempt"();
"#,
    ),
    (
        2,
        r#"
-- PostgreSQL parses every CHECK expression of a table again on each INSERT and UPDATE
-- (`ExecConstraints` -> `stringToNode`): measured, 14% of the server's CPU per claimed and
-- completed key. The records table, written by every claim, completion and heartbeat, keeps
-- none; readers validate each row instead (a bad value is `Error::Corrupt`).
-- By catalog, not by name: PostgreSQL shortens generated names past 63 bytes its own way.
DO $idem$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = '{records}'::regclass AND contype = 'c'
    LOOP
        EXECUTE format('ALTER TABLE {records} DROP CONSTRAINT %I', c.conname);
    END LOOP;
END
$idem$;

-- The write half of a claim. The claim statement is a plain SELECT of the record that calls
-- this only when the record is not live, so a replay or a wait reads one row and initializes no
-- INSERT. Returns {attempt, taken-over attempt or 0}, or NULL when a concurrent claimer made the
-- record live first (the caller runs the claim again).
--
-- The new attempt is above the key's own and above the floor, both read in this INSERT's
-- snapshot: purge and forget delete a row and raise the floor in one transaction, so the snapshot
-- sees either the row or the raised floor, and attempt numbers never go back. Under READ COMMITTED,
-- `ON CONFLICT DO UPDATE` waits for a concurrent claimer, locks the newest row version and
-- re-checks the `WHERE` on it, so exactly one of any number of racing claimers acquires.
CREATE FUNCTION "{schema}"."{prefix}acquire"(
    p_key bytea, p_op text, p_fingerprint bytea, p_lease_ms float8, p_worker text,
    p_ttl_ms float8
) RETURNS bigint[] LANGUAGE plpgsql AS $idem$
DECLARE
    v_attempt bigint;
    v_from bigint;
    v_now timestamptz := statement_timestamp();
BEGIN
    INSERT INTO {records} AS r
        (key, op, status, attempt, fingerprint, lease_until, worker, created_at, updated_at,
         attempt_started_at, attempt_outcome, expires_at)
    VALUES (p_key, p_op, 'running',
            greatest((SELECT value FROM {meta} WHERE name = 'attempt_floor'),
                     (SELECT attempt FROM {records} WHERE key = p_key), 0) + 1,
            p_fingerprint, v_now + p_lease_ms * interval '1 millisecond', p_worker, v_now, v_now,
            v_now, 'running',
            -- A provisional expiry, ttl + slack ahead (slack: the lease, at most 1% of the ttl):
            -- a completion within the slack keeps it, so it changes no indexed column and is a
            -- HOT update.
            v_now + (p_ttl_ms + least(p_lease_ms, p_ttl_ms / 100)) * interval '1 millisecond')
    ON CONFLICT (key) DO UPDATE SET
        op = excluded.op,
        status = 'running',
        attempt = greatest(r.attempt + 1, excluded.attempt),
        taken_over_from = CASE WHEN r.status = 'running' THEN r.attempt END,
        fingerprint = excluded.fingerprint,
        snapshot = NULL, snapshot_kind = NULL, error = NULL,
        lease_until = excluded.lease_until,
        worker = excluded.worker,
        updated_at = excluded.updated_at,
        expires_at = excluded.expires_at,
        waiters = false,
        attempt_started_at = excluded.attempt_started_at,
        attempt_outcome = 'running'
    -- Only a record of a known status is replaced: any other is corrupt, and the claim
    -- statement reports it instead of running the body again.
    WHERE r.status IN ('running', 'completed', 'failed')
      AND NOT coalesce((r.status = 'completed' AND r.expires_at > v_now)
                       OR (r.status = 'running' AND r.lease_until > v_now), false)
    RETURNING r.attempt, r.taken_over_from INTO v_attempt, v_from;
    IF v_attempt IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY[v_attempt, coalesce(v_from, 0)];
END
$idem$;
"#,
    ),
    (
        3,
        r#"
-- The attempt floor, mirrored in a sequence that the claim of a new key reads with
-- `pg_sequence_last_value`: a function call instead of a subquery on the meta table and one on
-- the key's own row, which cost 47,000 of the 309,000 server instructions of a claimed and
-- completed key (callgrind). A sequence is not transactional: the mirror is raised by the
-- statement that deletes rows and raises the floor, before its transaction commits, and is
-- visible at once, so it is never below a committed-deleted attempt a claim could collide with.
--
-- First, wait for any writer of the floor still running (an older build's purge during a
-- rolling upgrade) and keep new ones out until the trigger below exists, so the copy starts
-- from the floor's final value.
LOCK TABLE {meta} IN SHARE ROW EXCLUSIVE MODE;
CREATE SEQUENCE {floor} MINVALUE 0 NO CYCLE;
SELECT setval('{floor}', (SELECT value FROM {meta} WHERE name = 'attempt_floor'), true);

-- Every writer of the floor (this version's purge and forget, and an older build's still
-- running during a rolling upgrade) goes through the meta row, whose row lock orders them; the
-- trigger copies each raise into the mirror before that writer commits. `greatest`: a raise
-- whose transaction rolled back leaves the mirror higher than the floor, which is harmless.
CREATE FUNCTION "{schema}"."{prefix}mirror_floor"() RETURNS trigger LANGUAGE plpgsql AS $idem$
BEGIN
    PERFORM setval('{floor}', greatest(NEW.value, pg_sequence_last_value('{floor}')), true);
    RETURN NULL;
END
$idem$;
CREATE TRIGGER "{prefix}mirror_floor" AFTER UPDATE OF value ON {meta}
    FOR EACH ROW WHEN (NEW.name = 'attempt_floor')
    EXECUTE FUNCTION "{schema}"."{prefix}mirror_floor"();
"#,
    ),
    (
        4,
        r#"
-- A call whose caller dropped it while its body ran releases its claim at once, and its
-- attempt is logged `cancelled`. The attempts table keeps its CHECK constraint (it is written
-- only when a claim replaces an attempt), rebuilt by catalog with the new value.
DO $idem$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = '{attempts}'::regclass AND contype = 'c'
    LOOP
        EXECUTE format('ALTER TABLE {attempts} DROP CONSTRAINT %I', c.conname);
    END LOOP;
END
$idem$;
ALTER TABLE {attempts} ADD CONSTRAINT "{prefix}attempts_outcome" CHECK (outcome IN
    ('running', 'completed', 'failed', 'abandoned', 'fenced', 'released', 'cancelled'));
"#,
    ),
    (
        5,
        r#"
-- The claim of a new key is a plain INSERT whose attempt is one above the attempt floor's
-- mirror. When that insert waited for a purge or forget deleting the key's old row, the floor
-- rose while it waited, and the attempt it took may be at or below a deleted one. Its RETURNING
-- clause re-reads the mirror and, only then, calls this function, which gives the row (inserted
-- by the same statement, so no other transaction has seen it) an attempt above the floor. It
-- deletes and re-inserts rather than updates: the row's attempt never existed, so the trigger
-- that logs a replaced attempt must not see it replaced.
CREATE FUNCTION "{schema}"."{prefix}renumber"(p_key bytea) RETURNS bigint
LANGUAGE plpgsql AS $idem$
DECLARE
    v_row {records}%ROWTYPE;
BEGIN
    DELETE FROM {records} WHERE key = p_key RETURNING * INTO STRICT v_row;
    v_row.attempt := pg_sequence_last_value('{floor}') + 1;
    INSERT INTO {records} VALUES (v_row.*);
    RETURN v_row.attempt;
END
$idem$;
"#,
    ),
    (
        6,
        r#"
-- The stream journal: the chunks of a streamed result, one row each, in the order of `seq`.
-- Keyed by (key, attempt, seq): a retried append of a chunk number does nothing, and reading an
-- attempt's stream is one range of the primary key. No CHECK constraints (see version 2).
CREATE TABLE {chunks} (
    key       bytea NOT NULL,
    attempt   bigint NOT NULL,
    seq       bigint NOT NULL,
    offset_ms integer NOT NULL,
    chunk     bytea NOT NULL,
    PRIMARY KEY (key, attempt, seq)
);

-- Chunks go with their record: every statement that deletes records (forget, purge) deletes
-- their chunks through this trigger, in the same statement. `renumber` deletes and re-inserts
-- a row no one has seen yet, which has no chunks of its own.
CREATE FUNCTION "{schema}"."{prefix}forget_chunks"() RETURNS trigger LANGUAGE plpgsql AS $idem$
BEGIN
    DELETE FROM {chunks} WHERE key = OLD.key;
    RETURN NULL;
END
$idem$;
CREATE TRIGGER "{prefix}chunks_gone" AFTER DELETE ON {records}
    FOR EACH ROW EXECUTE FUNCTION "{schema}"."{prefix}forget_chunks"();
"#,
    ),
    (
        7,
        r#"
-- Steps inside steps: the call whose body made a record's first call, and its position among
-- that body's steps. Set by the insert that creates the record, never changed, so no update
-- touches them and completions stay HOT. Nullable without a default: no table rewrite.
ALTER TABLE {records} ADD COLUMN parent bytea, ADD COLUMN position bigint;
-- A run's steps, in order, without a scan. Partial: a top-level call adds no index entry.
CREATE INDEX "{prefix}records_parent" ON {records} (parent, position) WHERE parent IS NOT NULL;

-- The cost ledger. What an attempt cost, as its body reported it (a JSON object of unit to
-- amount, or NULL): the current attempt's on the record (written by its completion, cleared by
-- the claim that replaces it), past ones' in the log, moved there by the trigger with it.
ALTER TABLE {records} ADD COLUMN cost text;
ALTER TABLE {attempts} ADD COLUMN cost text;
CREATE OR REPLACE FUNCTION "{schema}"."{prefix}log_past_attempt"() RETURNS trigger LANGUAGE plpgsql AS $idem$
BEGIN
    INSERT INTO {attempts} (key, attempt, worker, started_at, ended_at, outcome, error, cost)
    VALUES (OLD.key, OLD.attempt, coalesce(OLD.worker, ''), OLD.attempt_started_at,
            CASE WHEN OLD.status = 'running' THEN NEW.updated_at ELSE OLD.updated_at END,
            CASE WHEN OLD.status = 'running' THEN 'abandoned' ELSE OLD.attempt_outcome END,
            OLD.error, OLD.cost)
    ON CONFLICT (key, attempt) DO NOTHING;
    RETURN NULL;
END
$idem$;
CREATE OR REPLACE FUNCTION "{schema}"."{prefix}acquire"(
    p_key bytea, p_op text, p_fingerprint bytea, p_lease_ms float8, p_worker text,
    p_ttl_ms float8
) RETURNS bigint[] LANGUAGE plpgsql AS $idem$
DECLARE
    v_attempt bigint;
    v_from bigint;
    v_now timestamptz := statement_timestamp();
BEGIN
    INSERT INTO {records} AS r
        (key, op, status, attempt, fingerprint, lease_until, worker, created_at, updated_at,
         attempt_started_at, attempt_outcome, expires_at)
    VALUES (p_key, p_op, 'running',
            greatest((SELECT value FROM {meta} WHERE name = 'attempt_floor'),
                     (SELECT attempt FROM {records} WHERE key = p_key), 0) + 1,
            p_fingerprint, v_now + p_lease_ms * interval '1 millisecond', p_worker, v_now, v_now,
            v_now, 'running',
            -- A provisional expiry, ttl + slack ahead (slack: the lease, at most 1% of the ttl):
            -- a completion within the slack keeps it, so it changes no indexed column and is a
            -- HOT update.
            v_now + (p_ttl_ms + least(p_lease_ms, p_ttl_ms / 100)) * interval '1 millisecond')
    ON CONFLICT (key) DO UPDATE SET
        op = excluded.op,
        status = 'running',
        attempt = greatest(r.attempt + 1, excluded.attempt),
        taken_over_from = CASE WHEN r.status = 'running' THEN r.attempt END,
        fingerprint = excluded.fingerprint,
        snapshot = NULL, snapshot_kind = NULL, error = NULL, cost = NULL,
        lease_until = excluded.lease_until,
        worker = excluded.worker,
        updated_at = excluded.updated_at,
        expires_at = excluded.expires_at,
        waiters = false,
        attempt_started_at = excluded.attempt_started_at,
        attempt_outcome = 'running'
    -- Only a record of a known status is replaced: any other is corrupt, and the claim
    -- statement reports it instead of running the body again.
    WHERE r.status IN ('running', 'completed', 'failed')
      AND NOT coalesce((r.status = 'completed' AND r.expires_at > v_now)
                       OR (r.status = 'running' AND r.lease_until > v_now), false)
    RETURNING r.attempt, r.taken_over_from INTO v_attempt, v_from;
    IF v_attempt IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY[v_attempt, coalesce(v_from, 0)];
END
$idem$;
-- What replays avoided, by operation and unit, added up by each process in batches.
CREATE TABLE {costs_avoided} (
    op      text NOT NULL,
    unit    text NOT NULL,
    amount  float8 NOT NULL,
    replays bigint NOT NULL,
    PRIMARY KEY (op, unit)
);
"#,
    ),
    (
        8,
        r#"
-- The records that carry a cost, for the cost ledger (`stats`, `Idem::costs`). Partial: a
-- record without a cost (the common case) adds no entry, and no hot write changes `op`.
-- `IF NOT EXISTS`: an index an operator built beforehand with CREATE INDEX CONCURRENTLY
-- (docs/migrating.md) is kept.
CREATE INDEX IF NOT EXISTS "{prefix}records_costed" ON {records} (op) WHERE cost IS NOT NULL;

-- The stream journal's rows went with each deleted record one trigger call per row; now
-- once per statement, as the counts: a purge batch is one join.
DROP TRIGGER "{prefix}chunks_gone" ON {records};
DROP FUNCTION "{schema}"."{prefix}forget_chunks"();
CREATE FUNCTION "{schema}"."{prefix}forget_chunks_of"() RETURNS trigger LANGUAGE plpgsql AS $idem$
BEGIN
    DELETE FROM {chunks} c USING gone g WHERE c.key = g.key;
    RETURN NULL;
END
$idem$;
CREATE TRIGGER "{prefix}chunks_gone" AFTER DELETE ON {records}
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION "{schema}"."{prefix}forget_chunks_of"();
"#,
    ),
];

/// The longest schema name (PostgreSQL truncates identifiers at 63 bytes).
const MAX_SCHEMA: usize = 63;
/// The longest table prefix: every derived name (`<prefix>log_past_attempt`) must fit in 63
/// bytes.
const MAX_PREFIX: usize = 40;

/// Checks a configured identifier: lower-case ASCII letters, digits and `_`, not starting with a
/// digit. Anything else (quotes, spaces, dots, semicolons) is refused, so no configuration value
/// can change the meaning of a statement.
pub(super) fn validate_identifier(
    what: &str,
    value: &str,
    allow_empty: bool,
    max: usize,
) -> Result<(), Error> {
    let bad = |why: &str| {
        Err(Error::Config(format!(
            "invalid PostgreSQL {what} {value:?}: {why}"
        )))
    };
    if value.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            bad("it is empty")
        };
    }
    if value.len() > max {
        return bad(&format!("it is longer than {max} bytes"));
    }
    if value.as_bytes()[0].is_ascii_digit() {
        return bad("it starts with a digit");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return bad("only lower-case ASCII letters, digits and `_` are allowed");
    }
    Ok(())
}

/// The validated, quoted names a store's statements use.
#[derive(Debug, Clone)]
pub(super) struct Names {
    pub(super) schema: String,
    pub(super) prefix: String,
    /// `"schema"."prefixrecords"`.
    pub(super) records: String,
    pub(super) attempts: String,
    pub(super) meta: String,
    /// The stream journal (format version 6).
    pub(super) chunks: String,
    /// The avoided-cost ledger (format version 7).
    pub(super) costs_avoided: String,
    /// The sequence that mirrors the attempt floor (format version 3).
    pub(super) floor: String,
    pub(super) versions: String,
    /// The LISTEN/NOTIFY channel.
    pub(super) channel: String,
}

impl Names {
    pub(super) fn new(schema: &str, prefix: &str) -> Result<Self, Error> {
        validate_identifier("schema name", schema, false, MAX_SCHEMA)?;
        validate_identifier("table prefix", prefix, true, MAX_PREFIX)?;
        let table = |name: &str| format!("\"{schema}\".\"{prefix}{name}\"");
        let hash = blake3::hash(format!("{schema}.{prefix}").as_bytes());
        Ok(Self {
            schema: schema.to_owned(),
            prefix: prefix.to_owned(),
            records: table("records"),
            attempts: table("attempts"),
            meta: table("meta"),
            chunks: table("chunks"),
            costs_avoided: table("costs_avoided"),
            floor: table("attempt_floor"),
            versions: table("schema"),
            channel: format!("idem_{}", &hash.to_hex()[..16]),
        })
    }

    fn expand(&self, sql: &str) -> String {
        sql.replace("{records}", &self.records)
            .replace("{attempts}", &self.attempts)
            .replace("{meta}", &self.meta)
            .replace("{chunks}", &self.chunks)
            .replace("{costs_avoided}", &self.costs_avoided)
            .replace("{floor}", &self.floor)
            .replace("{prefix}", &self.prefix)
            .replace("{schema}", &self.schema)
    }
}

/// Applies every missing migration (a no-op, one read, when the database is up to date), then
/// raises the attempt floor's mirror if it fell behind (see [`heal_floor_mirror`]).
///
/// Boxed as `Send`, so the future of opening a store can be spawned (the compiler cannot prove
/// `Send` for sqlx's higher-ranked executor bounds through an unboxed `async fn` chain).
pub(super) fn migrate<'a>(
    conn: &'a mut PgConnection,
    names: &'a Names,
) -> futures_util::future::BoxFuture<'a, Result<(), sqlx::Error>> {
    Box::pin(async move {
        migrate_inner(conn, names).await?;
        heal_floor_mirror(conn, names).await
    })
}

/// The format version of the idem tables under `names`, or `None` when there are none (no
/// schema, or no tables in it). Reads only; boxed as `Send` for the reason [`migrate`] is.
pub(super) fn check<'a>(
    conn: &'a mut PgConnection,
    names: &'a Names,
) -> futures_util::future::BoxFuture<'a, Result<Option<i32>, sqlx::Error>> {
    Box::pin(async move {
        sqlx::query_scalar(&format!("SELECT max(version) FROM {}", names.versions))
            .fetch_one(&mut *conn)
            .await
            .or_else(|e| match &e {
                // 42P01 undefined_table, 3F000 invalid_schema_name.
                sqlx::Error::Database(db)
                    if matches!(db.code().as_deref(), Some("42P01" | "3F000")) =>
                {
                    Ok(None)
                }
                _ => Err(e),
            })
    })
}

async fn migrate_inner(conn: &mut PgConnection, names: &Names) -> Result<(), sqlx::Error> {
    // No tables (`None`): a new database.
    let current = check(&mut *conn, names).await?;
    if current == Some(FORMAT_VERSION) {
        return Ok(());
    }

    let mut tx = conn.begin().await?;
    // Every worker starting at once queues here; the lock is released at commit.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("idem.migrate:{}.{}", names.schema, names.prefix))
        .execute(&mut *tx)
        .await?;
    // Create the schema only when missing: `CREATE SCHEMA IF NOT EXISTS` needs the database's
    // CREATE privilege even when the schema exists, which an application's role may lack.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&names.schema)
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE SCHEMA \"{}\"", names.schema))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, applied_at timestamptz NOT NULL)",
        names.versions
    ))
    .execute(&mut *tx)
    .await?;
    let current: i32 = sqlx::query_scalar(&format!(
        "SELECT coalesce(max(version), 0) FROM {}",
        names.versions
    ))
    .fetch_one(&mut *tx)
    .await?;
    if current > FORMAT_VERSION {
        return Err(sqlx::Error::Protocol(format!(
            "the database has idem format version {current}, newer than this build's {FORMAT_VERSION}; upgrade idem"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let ddl = names.expand(sql);
        sqlx::Executor::execute(&mut *tx, ddl.as_str()).await?;
        sqlx::query(&format!(
            "INSERT INTO {} (version, applied_at) VALUES ($1, statement_timestamp())",
            names.versions
        ))
        .bind(version)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Raises the attempt floor's mirror to the floor if it is below it: a sequence can fall behind
/// its table where only tables travel (a dump restored without sequences, a switchover by logical
/// replication). Under the floor row's lock, which every writer of the floor takes, so the value
/// read is the floor's latest; `greatest`, so the mirror never goes down.
async fn heal_floor_mirror(conn: &mut PgConnection, names: &Names) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    let floor: i64 = sqlx::query_scalar(&format!(
        "SELECT value FROM {} WHERE name = 'attempt_floor' FOR UPDATE",
        names.meta
    ))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "SELECT setval('{0}', greatest($1, pg_sequence_last_value('{0}')), true)",
        names.floor
    ))
    .bind(floor)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::Names;

    #[test]
    fn names_are_validated_and_quoted() {
        let n = Names::new("public", "idem_").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.records, "\"public\".\"idem_records\"");
        assert!(n.channel.starts_with("idem_") && n.channel.len() == 21);
        assert!(Names::new("public", "").is_ok());
        for bad in [
            "x\"; DROP TABLE t; --",
            "Upper",
            "a b",
            "a.b",
            "1abc",
            "é",
            "",
        ] {
            assert!(Names::new(bad, "idem_").is_err(), "schema {bad:?}");
        }
        for bad in ["x\"; DROP TABLE t; --", "p-", &"p".repeat(41)] {
            assert!(Names::new("public", bad).is_err(), "prefix {bad:?}");
        }
    }
}
