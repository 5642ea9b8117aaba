//! The statement text of the SQLite store, built once (it embeds SQLite's clock expression).

use std::sync::OnceLock;

use super::schema::NOW;

/// Statement text, built once (it embeds the clock expression).
pub(super) struct Sql {
    pub(super) read: String,
    pub(super) claim: String,
    pub(super) claim_new: String,
    pub(super) renew: String,
    pub(super) complete: String,
    pub(super) fence_log: String,
    pub(super) release: String,
    pub(super) purge_expired: String,
    pub(super) purge_window: String,
    pub(super) purge_abandoned: String,
}

pub(super) fn sql() -> &'static Sql {
    static SQL: OnceLock<Sql> = OnceLock::new();
    SQL.get_or_init(|| {
        let live = format!(
            "((status = 'completed' AND expires_at > {NOW}) OR (status = 'running' AND lease_until > {NOW}))"
        );
        let released_ms = crate::store::millis(crate::store::RELEASED_TTL);
        let read = format!(
            "SELECT 0 AS acquired, status, attempt, taken_over_from, fingerprint, snapshot,
                    snapshot_kind, expires_at, lease_until, {NOW} AS now, op, cost
             FROM idem_records WHERE key = ?1"
        );
        Sql {
        // ?1 key, ?2 op, ?3 fingerprint, ?4 lease ms, ?5 worker, ?6 parent key, ?7 position.
        // One round trip, two statements:
        // the SELECT reads the row as it was; the INSERT claims the key only if no live row
        // exists, and returns a row only when this caller acquired it. Sent only after `read`
        // found no live row: any INSERT, even one its `WHERE NOT EXISTS` stops, takes the write
        // lock, so a replay sent here would wait behind any writer (an open step). `op` is never in the SET list: it is fixed by
        // the key, and leaving it out keeps SQLite from rewriting the `op` index on reclaims.
        claim: format!(
            "{READ};
             INSERT INTO idem_records (key, op, status, attempt, fingerprint, lease_until, worker,
                                       created_at, updated_at, attempt_started_at, attempt_outcome,
                                       parent, position)
             SELECT ?1, ?2, 'running', (SELECT value FROM idem_meta WHERE name = 'attempt_floor') + 1,
                    ?3, {NOW} + ?4, ?5, {NOW}, {NOW}, {NOW}, 'running', ?6, ?7
             WHERE NOT EXISTS (SELECT 1 FROM idem_records
                               WHERE key = ?1 AND {LIVE})
             ON CONFLICT (key) DO UPDATE SET
                 status = 'running',
                 attempt = max(attempt, excluded.attempt - 1) + 1,
                 taken_over_from = CASE WHEN status = 'running' THEN attempt END,
                 fingerprint = excluded.fingerprint,
                 snapshot = NULL, snapshot_kind = NULL, error = NULL, cost = NULL,
                 lease_until = excluded.lease_until,
                 worker = excluded.worker,
                 updated_at = excluded.updated_at,
                 expires_at = NULL,
                 attempt_started_at = excluded.updated_at,
                 attempt_outcome = 'running'
             WHERE NOT ((status = 'completed' AND expires_at > excluded.updated_at)
                     OR (status = 'running' AND lease_until > excluded.updated_at))
             RETURNING 1 AS acquired, status, attempt, taken_over_from, fingerprint, snapshot,
                       snapshot_kind, expires_at, lease_until, updated_at AS now, op, cost;",
            LIVE = live,
            READ = read,
        ),
        // ?1 key, ?2 op, ?3 fingerprint, ?4 lease ms, ?5 worker, ?6 parent key, ?7 position.
        // The claim of a key without a record, as plain as the hand-written insert: sent first
        // when the operation's recent claims were new keys (`predict.rs`). A key that has a
        // record inserts nothing and returns no row; `claim` then decides (it reads the row,
        // takes it over, reruns it). Writers are serialized, so the attempt floor read here is
        // current.
        claim_new: format!(
            "INSERT INTO idem_records (key, op, status, attempt, fingerprint, lease_until, worker,
                                       created_at, updated_at, attempt_started_at, attempt_outcome,
                                       parent, position)
             VALUES (?1, ?2, 'running', (SELECT value FROM idem_meta WHERE name = 'attempt_floor') + 1,
                     ?3, {NOW} + ?4, ?5, {NOW}, {NOW}, {NOW}, 'running', ?6, ?7)
             ON CONFLICT (key) DO NOTHING
             RETURNING attempt"
        ),
        // ?1 key. The claim's read alone: a pure read, so it never waits for the write lock
        // (WAL readers do not block on a writer). `SqliteStore::claim` sends it first, and the
        // claim statement only when the record is not live (see there).
        read,
        renew: format!(
            "UPDATE idem_records SET lease_until = {NOW} + ?3
             WHERE key = ?1 AND attempt = ?2 AND status = 'running'"
        ),
        // ?1 key, ?2 attempt, ?3 status, ?4 snapshot, ?5 kind, ?6 error, ?7 ttl ms,
        // ?8 the attempt's outcome for the log, ?9 its cost.
        complete: format!(
            "UPDATE idem_records
             SET status = ?3, snapshot = ?4, snapshot_kind = ?5, error = ?6, lease_until = NULL,
                 updated_at = {NOW}, expires_at = {NOW} + ?7, attempt_outcome = ?8, cost = ?9
             WHERE key = ?1 AND attempt = ?2 AND status = 'running'"
        ),
        fence_log: format!(
            "UPDATE idem_attempts SET outcome = 'fenced', ended_at = {NOW}, error = ?3, cost = ?4
             WHERE key = ?1 AND attempt = ?2"
        ),
        release: format!(
            "UPDATE idem_records
             SET status = 'failed', error = 'released by an operator', lease_until = NULL,
                 updated_at = {NOW}, expires_at = {NOW} + {released_ms},
                 attempt_outcome = 'released'
             WHERE key = ?1 AND status = 'running'
             RETURNING attempt"
        ),
        // ?1 batch. Returns the deleted attempts, for the floor.
        purge_expired: format!(
            "DELETE FROM idem_records WHERE key IN (
                 SELECT key FROM idem_records WHERE expires_at <= {NOW} LIMIT ?1)
             RETURNING attempt"
        ),
        // ?1 the sweep's cursor (the last key of the previous window; x'' at first), ?2 the
        // window's size: the window's last key (NULL: the sweep is over).
        purge_window: "SELECT max(key) FROM (
                           SELECT key FROM idem_records WHERE key > ?1 ORDER BY key LIMIT ?2)"
            .to_owned(),
        // ?1 the window's cursor, ?2 its last key, ?3 abandoned-after ms, ?4 at most this many.
        // One range of the primary key (the table is ordered by it).
        purge_abandoned: format!(
            "DELETE FROM idem_records WHERE key IN (
                 SELECT key FROM idem_records
                 WHERE key > ?1 AND key <= ?2
                   AND status = 'running' AND lease_until <= {NOW} - ?3 LIMIT ?4)
             RETURNING attempt"
        ),
        }
    })
}

pub(super) const RECORD_COLUMNS: &str =
    "key, op, status, attempt, fingerprint, snapshot, snapshot_kind, \
                              error, lease_until, worker, created_at, updated_at, expires_at, \
                              parent, position, cost";

/// [`RECORD_COLUMNS`] for listings: never the snapshot, which may be megabytes.
pub(super) const LISTED_COLUMNS: &str = "key, op, status, attempt, fingerprint, NULL AS snapshot, \
                              snapshot_kind, error, lease_until, worker, created_at, updated_at, \
                              expires_at, parent, position, cost";

/// The most chunks one append statement carries: three parameters each, far below SQLite's
/// limit on bound parameters (32,766), and a bound on the statement texts kept.
pub(super) const APPEND_BATCH: usize = 256;

/// The fenced append of `n` chunks (`0 ..= APPEND_BATCH`; with 0 it only checks the fence, and
/// drops earlier attempts' chunks if `first_append`), built once per size and kind: its `VALUES`
/// list depends on the batch size, and sqlx caches prepared statements by text.
///
/// ?1 key, ?2 attempt, ?3 first chunk number, then (seq, offset ms, chunk) per chunk. One round
/// trip, up to three statements:
/// - a first append (`first` = 0: a new attempt's stream begins) deletes the chunks of the key's
///   earlier attempts, fenced like the insert. Before the insert and not in its transaction:
///   once this attempt runs, earlier attempts can never write again, so their chunks are garbage
///   either way. Later appends leave the statement out, so they take the write lock once.
/// - the insert writes the chunks only if the record is `running` with this attempt, and only
///   after a chunk `first - 1` (a gap would make readers skip chunk numbers, as in the memory
///   store); `OR IGNORE` keeps a chunk number already journaled (a retried append).
/// - the last statement returns how many chunks the insert wrote (`changes()`, which counts no
///   trigger's rows) and whether the record is still this attempt's: 0 chunks written means
///   either a lost fence or a retried append, and the flag tells them apart without a second
///   round trip.
pub(super) fn append_chunks(n: usize, first_append: bool) -> &'static str {
    const SIZES: usize = APPEND_BATCH + 1;
    static TEXTS: [[OnceLock<String>; SIZES]; 2] =
        [const { [const { OnceLock::new() }; SIZES] }; 2];
    // Callers split longer appends into batches; a larger `n` would bind chunks past the text.
    let n = n.min(APPEND_BATCH);
    TEXTS[usize::from(first_append)][n].get_or_init(|| {
        let owned = "EXISTS (SELECT 1 FROM idem_records
                             WHERE key = ?1 AND attempt = ?2 AND status = 'running')";
        let delete = if first_append {
            format!("DELETE FROM idem_chunks WHERE key = ?1 AND attempt < ?2 AND {owned};")
        } else {
            String::new()
        };
        let insert = if n == 0 {
            String::new()
        } else {
            let values: Vec<String> = (0..n)
                .map(|i| format!("(?{}, ?{}, ?{})", 4 + 3 * i, 5 + 3 * i, 6 + 3 * i))
                .collect();
            format!(
                "INSERT OR IGNORE INTO idem_chunks (key, attempt, seq, offset_ms, chunk)
                 SELECT ?1, ?2, column1, column2, column3 FROM (VALUES {})
                 WHERE {owned}
                   AND (?3 = 0 OR EXISTS (SELECT 1 FROM idem_chunks
                                          WHERE key = ?1 AND attempt = ?2 AND seq = ?3 - 1));",
                values.join(", ")
            )
        };
        let added = if n == 0 { "0" } else { "changes()" };
        format!("{delete}\n{insert}\nSELECT {added} AS added, {owned} AS owned")
    })
}

/// ?1 key, ?2 attempt, ?3 from, ?4 limit: one range of the primary key, in order.
pub(super) const READ_CHUNKS: &str = "SELECT offset_ms, chunk FROM idem_chunks
     WHERE key = ?1 AND attempt = ?2 AND seq >= ?3 ORDER BY seq LIMIT ?4";

/// ?1 key, ?2 attempt.
pub(super) const COUNT_CHUNKS: &str =
    "SELECT count(*) FROM idem_chunks WHERE key = ?1 AND attempt = ?2";

/// ?1 op, ?2 unit, ?3 amount, ?4 replays: adds to the avoided-cost ledger.
pub(super) const ADD_AVOIDED: &str = "INSERT INTO idem_costs_avoided (op, unit, amount, replays)
     VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (op, unit) DO UPDATE SET amount = amount + excluded.amount,
                                          replays = replays + excluded.replays";

/// ?1 op (NULL: every one). What attempts spent (the records' current attempts and the log's
/// past ones, each a JSON object of unit to amount) and what replays avoided, by operation and
/// unit. Operators' reads: it scans the records that carry a cost.
pub(super) const COSTS: &str = "WITH spent AS (
         SELECT r.op AS op, j.key AS unit, sum(j.value) AS amount
         FROM idem_records r, json_each(r.cost) j
         WHERE r.cost IS NOT NULL AND (?1 IS NULL OR r.op = ?1)
         GROUP BY 1, 2
         UNION ALL
         SELECT r.op, j.key, sum(j.value)
         FROM idem_attempts a JOIN idem_records r ON r.key = a.key, json_each(a.cost) j
         WHERE a.cost IS NOT NULL AND (?1 IS NULL OR r.op = ?1)
         GROUP BY 1, 2
     ), lines AS (
         SELECT op, unit, amount AS spent, 0.0 AS avoided, 0 AS replays FROM spent
         UNION ALL
         SELECT op, unit, 0.0, amount, replays FROM idem_costs_avoided WHERE ?1 IS NULL OR op = ?1
     )
     SELECT op, unit, CAST(sum(spent) AS REAL), CAST(sum(avoided) AS REAL),
            CAST(sum(replays) AS INTEGER)
     FROM lines GROUP BY op, unit ORDER BY op, unit";
