//! The statement text of the PostgreSQL store, built once per store from its validated names.
//!
//! Every decision is made by one statement (autocommit, READ COMMITTED): a claim by `claim` or
//! `claim_new` (the store may send the other first, which then decided nothing and wrote
//! nothing), a completion by `complete` (its NOTIFY, when someone waits, follows in its own
//! statement). Every time is the server's `statement_timestamp()`: fixed for the whole
//! statement, current for each statement, even inside a caller's longer transaction.

use super::schema::Names;

/// The server's clock, fixed within a statement.
const NOW: &str = "statement_timestamp()";

/// A `timestamptz` expression as whole milliseconds since the Unix epoch. `date_part` computes
/// in `float8` (exact to the microsecond for the next 200 years); `extract` would compute in
/// `numeric`, several times slower on every returned row.
fn ms(expr: &str) -> String {
    format!("(date_part('epoch', {expr}) * 1000)::int8")
}

/// The columns of a [`crate::record::Record`], times in milliseconds.
pub(super) fn record_columns() -> String {
    format!(
        "key, op, status, attempt, fingerprint, snapshot, snapshot_kind, error, {} AS lease_until, \
         worker, {} AS created_at, {} AS updated_at, {} AS expires_at, parent, position, cost",
        ms("lease_until"),
        ms("created_at"),
        ms("updated_at"),
        ms("expires_at"),
    )
}

/// [`record_columns`] for listings: never the snapshot, which may be megabytes.
fn listed_columns() -> String {
    record_columns().replacen(" snapshot,", " NULL::bytea AS snapshot,", 1)
}

/// Statement text of one store.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) claim: String,
    pub(super) claim_new: String,
    pub(super) claim_new_batch: String,
    pub(super) claim_step: String,
    pub(super) claim_new_step: String,
    pub(super) claim_new_step_batch: String,
    pub(super) renew: String,
    pub(super) complete: String,
    pub(super) complete_batch: String,
    pub(super) release: String,
    pub(super) notify: String,
    pub(super) fence_log: String,
    pub(super) flag_waiters: String,
    pub(super) forget: String,
    pub(super) get: String,
    pub(super) attempts: String,
    pub(super) list: String,
    pub(super) children: String,
    pub(super) add_avoided: String,
    pub(super) costs: String,
    pub(super) counts: String,
    pub(super) append_chunks: String,
    pub(super) read_chunks: String,
    pub(super) count_chunks: String,
}

impl Sql {
    pub(super) fn new(n: &Names) -> Self {
        let (records, attempts, meta, channel) = (&n.records, &n.attempts, &n.meta, &n.channel);
        let chunks = &n.chunks;
        let costs_avoided = &n.costs_avoided;
        let live = format!(
            "(r.status = 'completed' AND r.expires_at > {NOW}) OR (r.status = 'running' AND r.lease_until > {NOW})"
        );
        let notify = format!("pg_notify('{channel}', encode($1, 'hex'))");
        let acquire = format!("\"{}\".\"{}acquire\"", n.schema, n.prefix);
        let renumber = format!("\"{}\".\"{}renumber\"", n.schema, n.prefix);
        // The attempt floor's mirror, read without a plan node (`pg_sequences` reads it so).
        let floor_now = format!("pg_sequence_last_value('{}'::regclass)", n.floor);
        let released_ms = crate::store::millis(crate::store::RELEASED_TTL);
        // A claim sets a provisional expiry (see `<prefix>acquire`), so a completion within
        // its slack keeps it, changes no indexed column and is a HOT update; a later
        // completion moves it to now + ttl. A completed record so lives between ttl and
        // ttl + 1%.
        let keep_expiry = format!(
            "CASE WHEN expires_at >= {NOW} + $7::float8 * interval '1 millisecond' THEN expires_at
                  ELSE {NOW} + $7::float8 * interval '1 millisecond' END"
        );
        // $1 key, $2 op, $3 fingerprint, $4 lease ms, $5 worker, $6 ttl ms.
        //
        // A plain read of the record, which calls `<prefix>acquire` (the write half, see
        // `schema.rs`) only when the record is not live. So it decides every claim of a key
        // that has a record in one round trip (replay, wait, take over, run again after a
        // failure or expiry, fingerprint mismatch), and the hot paths, a replay and a wait,
        // read one row: no INSERT is planned or initialized, nothing is locked or written,
        // and the commit needs no WAL flush. A data-modifying CTE, or liveness and
        // milliseconds computed in SQL, cost measurably more (docs/performance.md, "Why the
        // PostgreSQL statements look the way they do"), so the store returns raw columns and
        // the server's `now` and decides from them with the server's clock.
        //
        // A record whose status is not one of the three is returned as it is, so the store
        // reports it as corrupt instead of running the body again.
        //
        // No row: the key has no record; the store inserts (`claim_new`). `acquired` NULL
        // on a record that is not live: a concurrent claimer made it live after this
        // statement's snapshot; the store runs the statement again, which sees the
        // winner's row. A replaced attempt is logged by a trigger, in the same statement.
        //
        // A caller told `running` then flags the row (`waiters`, see `flag_waiters`), so the
        // completion knows to NOTIFY. Uncontended completions never notify: a notifying
        // commit holds PostgreSQL's global notify lock across its WAL flush, which would
        // serialize every completing worker of the cluster.
        let claim = format!(
            "SELECT r.attempt, r.fingerprint, r.status, r.snapshot, r.snapshot_kind,
                    r.expires_at, r.lease_until, {NOW} AS now, r.waiters, r.cost,
                    CASE WHEN r.status IN ('running', 'completed', 'failed')
                              AND NOT coalesce({live}, false)
                         THEN {acquire}($1, $2, $3, $4::float8, $5, $6::float8)
                    END AS acquired
             FROM {records} r WHERE r.key = $1"
        );
        // $1 key, $2 op, $3 fingerprint, $4 lease ms, $5 worker, $6 ttl ms.
        //
        // The claim of a key that has no record: a plain insert, as cheap as the
        // hand-written one. The store sends it first when the operation's recent calls
        // were new keys (see `predict.rs`), else after `claim` found no record. When the
        // key has a record it inserts nothing, locks nothing and writes nothing (the
        // conflict is found before any heap insert), and the store runs `claim`. Two
        // racing inserts of one key: the second waits for the first to commit, then
        // conflicts.
        //
        // The attempt is one above the attempt floor's mirror (format version 3), read
        // again after the insert: a purge or forget that deleted this key's old row
        // between the first read and the insert (the insert waits for such a deleter) raised
        // the mirror before its commit, so the second read sees it, and only then does the
        // RETURNING clause call `<prefix>renumber` (format version 5), which gives the row,
        // still invisible to everyone else, an attempt above the floor. So a new attempt is
        // always above every deleted one, without the two subqueries (floor and own row)
        // that cost a large share of a claimed and completed key's server instructions
        // (docs/performance.md), and without an error or a retry.
        // The new record's columns and values.
        // `$p`, `$p + 1`: the parent's key and the position (`claim_new` binds them after the
        // six claim parameters, `claim_new_step` after the step lock too).
        let new_columns = "(key, op, status, attempt, fingerprint, lease_until, worker, created_at,
                  updated_at, attempt_started_at, attempt_outcome, expires_at, parent, position)";
        let new_values = |p: u8| {
            format!(
                "$1, $2, 'running', {floor_now} + 1,
                     $3, {NOW} + $4::float8 * interval '1 millisecond', $5, {NOW}, {NOW},
                     {NOW}, 'running',
                     {NOW} + ($6::float8 + least($4::float8, $6::float8 / 100))
                             * interval '1 millisecond',
                     ${p}::bytea, ${}::int8",
                p + 1
            )
        };
        let new_attempt = format!(
            "CASE WHEN attempt > {floor_now} THEN attempt ELSE {renumber}($1) END AS attempt"
        );
        let claim_new = format!(
            "INSERT INTO {records} {new_columns}
             VALUES ({})
             ON CONFLICT (key) DO NOTHING
             RETURNING {new_attempt}",
            new_values(7)
        );
        // $1..$8 arrays (one element per claim, sorted by key, no key twice): keys, ops,
        // fingerprints, lease ms, workers, ttl ms, parents, positions. `claim_new` for many
        // keys at once (`batch.rs`): each row decided as its single-row insert would be.
        // With `lock`, also $9 the keys' step locks: the claims of the new keys of a group
        // of steps in one transaction (a consumer's group commit), each row inserted only when
        // its step lock was taken, as `claim_new_step` does, and the lock timeout off for the
        // rest of the transaction.
        let new_keys = |lock: bool| {
            let (lock_array, lock_column, lock_taken) = if lock {
                (
                    ", $9::int8[]",
                    ", lock",
                    "WHERE pg_try_advisory_xact_lock(u.lock)
                       AND set_config('lock_timeout', '0', true) = '0'",
                )
            } else {
                ("", "", "")
            };
            format!(
                "INSERT INTO {records} {new_columns}
                 SELECT u.key, u.op, 'running', {floor_now} + 1,
                        u.fingerprint, {NOW} + u.lease::float8 * interval '1 millisecond', u.worker,
                        {NOW}, {NOW}, {NOW}, 'running',
                        {NOW} + (u.ttl::float8 + least(u.lease::float8, u.ttl::float8 / 100))
                                * interval '1 millisecond',
                        u.parent, u.position
                 FROM unnest($1::bytea[], $2::text[], $3::bytea[], $4::int8[], $5::text[],
                             $6::int8[], $7::bytea[], $8::int8[]{lock_array})
                      AS u(key, op, fingerprint, lease, worker, ttl, parent, position{lock_column})
                 {lock_taken}
                 ON CONFLICT (key) DO NOTHING
                 RETURNING key, CASE WHEN attempt > {floor_now} THEN attempt ELSE {renumber}(key) END"
            )
        };
        let claim_new_batch = new_keys(false);
        let claim_new_step_batch = new_keys(true);
        // $7 the key's step lock (see `locks.rs`). The same two statements for a step, each
        // taking the key's advisory lock first, without waiting, in the same statement (so a
        // step pays no round trip for it), and turning the lock timeout off for the rest of
        // the step's transaction when it got the lock. The insert inserts nothing without the
        // lock; the read tells that case apart (`taken`), and, as a LEFT JOIN, answers with a
        // row even for a key without a record.
        let step_lock = "(SELECT t.taken,
                                 CASE WHEN t.taken THEN set_config('lock_timeout', '0', true) END
                          FROM (SELECT pg_try_advisory_xact_lock($7) AS taken) t) l";
        let claim_step = format!(
            "SELECT l.taken, r.attempt, r.fingerprint, r.status, r.snapshot, r.snapshot_kind,
                    r.expires_at, r.lease_until, {NOW} AS now, r.waiters, r.cost,
                    CASE WHEN l.taken AND r.status IN ('running', 'completed', 'failed')
                              AND NOT coalesce({live}, false)
                         THEN {acquire}($1, $2, $3, $4::float8, $5, $6::float8)
                    END AS acquired
             FROM {step_lock} LEFT JOIN {records} r ON r.key = $1"
        );
        let claim_new_step = format!(
            "INSERT INTO {records} {new_columns}
             SELECT {} FROM {step_lock} WHERE l.taken
             ON CONFLICT (key) DO NOTHING
             RETURNING {new_attempt}",
            new_values(8)
        );
        Self {
            claim,
            claim_new,
            claim_new_batch,
            claim_step,
            claim_new_step,
            claim_new_step_batch,
            // $1 key, $2 attempt, $3 lease ms. Touches no indexed column: a HOT update.
            renew: format!(
                "UPDATE {records} SET lease_until = {NOW} + $3::float8 * interval '1 millisecond'
                 WHERE key = $1 AND attempt = $2 AND status = 'running'"
            ),
            // $1 key, $2 attempt, $3 status, $4 snapshot, $5 kind, $6 error, $7 ttl ms,
            // $8 the attempt's outcome, $9 its cost. Fenced on (key, attempt, running): no row back means
            // the attempt lost its lease. Only the record row is written (the current
            // attempt's log line is the record itself), and within the provisional expiry's
            // slack no indexed column changes: a HOT update. It returns whether someone waits
            // for the outcome; the store then sends `notify`.
            complete: format!(
                "UPDATE {records}
                 SET status = $3, snapshot = $4, snapshot_kind = $5, error = $6, lease_until = NULL,
                     updated_at = {NOW}, expires_at = {keep_expiry}, attempt_outcome = $8,
                     cost = $9
                 WHERE key = $1 AND attempt = $2 AND status = 'running'
                 RETURNING waiters"
            ),
            // $1..$9 arrays (one element per completion, sorted by key, no key twice): keys,
            // attempts, statuses, snapshots, kinds, errors, ttl ms, outcomes, costs. `complete`
            // for many attempts at once (`batch.rs`), fenced row by row; returns the keys it
            // completed and whether someone waits for each.
            complete_batch: format!(
                "UPDATE {records} r
                 SET status = u.status, snapshot = u.snapshot, snapshot_kind = u.kind,
                     error = u.error, lease_until = NULL, updated_at = {NOW},
                     expires_at = CASE
                         WHEN r.expires_at >= {NOW} + u.ttl::float8 * interval '1 millisecond'
                         THEN r.expires_at
                         ELSE {NOW} + u.ttl::float8 * interval '1 millisecond' END,
                     attempt_outcome = u.outcome, cost = u.cost
                 FROM unnest($1::bytea[], $2::int8[], $3::text[], $4::bytea[], $5::text[],
                             $6::text[], $7::int8[], $8::text[], $9::text[])
                      AS u(key, attempt, status, snapshot, kind, error, ttl, outcome, cost)
                 WHERE r.key = u.key AND r.attempt = u.attempt AND r.status = 'running'
                 RETURNING r.key, r.waiters"
            ),
            // $1 key. After a completion someone waits for: its own statement, so the
            // completion itself never takes the cluster-wide notify lock.
            notify: format!("SELECT {notify}"),
            // $1 key, $2 attempt, $3 error, $4 cost. A lost attempt's past log line says `fenced`
            // (unless its own earlier, acknowledged-late write already ended it: a retried
            // complete whose first try committed must not relabel it). Rare: its own statement.
            fence_log: format!(
                "UPDATE {attempts} SET outcome = 'fenced', ended_at = {NOW}, error = $3, cost = $4
                 WHERE key = $1 AND attempt = $2 AND outcome NOT IN ('completed', 'failed')"
            ),
            // $1 key, $2 attempt. A caller told `running` flags the attempt, so its completion
            // will NOTIFY (once per attempt; a HOT update).
            flag_waiters: format!(
                "UPDATE {records} SET waiters = true
                 WHERE key = $1 AND attempt = $2 AND status = 'running' AND NOT waiters"
            ),
            release: format!(
                "WITH rel AS (
                     UPDATE {records}
                     SET status = 'failed', error = 'released by an operator', lease_until = NULL,
                         updated_at = {NOW},
                         expires_at = {NOW} + interval '{released_ms} milliseconds',
                         attempt_outcome = 'released'
                     WHERE key = $1 AND status = 'running'
                     RETURNING attempt
                 )
                 SELECT count({notify}) FROM rel"
            ),
            // $1 key, $2 force. One statement decides: the record is locked (its newest
            // version, under READ COMMITTED) and judged live by the server's clock; a live
            // running record is deleted only with `force`. Returns how many records were
            // deleted, and the op and attempt of a refused one.
            forget: format!(
                "WITH target AS (
                     SELECT key, op, attempt,
                            coalesce(status = 'running' AND lease_until > {NOW}, false) AS live
                     FROM {records} WHERE key = $1
                     FOR UPDATE
                 ), refused AS (
                     SELECT op, attempt FROM target WHERE live AND NOT $2::bool
                 ), gone AS (
                     DELETE FROM {records} r USING target t
                     WHERE r.key = t.key AND NOT EXISTS (SELECT 1 FROM refused)
                     RETURNING r.attempt
                 ), log_gone AS (
                     DELETE FROM {attempts} WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM refused)
                 ), floor AS (
                     UPDATE {meta} SET value = greatest(value, (SELECT max(attempt) FROM gone))
                     WHERE name = 'attempt_floor' AND EXISTS (SELECT 1 FROM gone)
                 )
                 SELECT (SELECT count({notify}) FROM gone) AS gone,
                        (SELECT op FROM refused) AS op, (SELECT attempt FROM refused) AS attempt"
            ),
            get: format!("SELECT {} FROM {records} WHERE key = $1", record_columns()),
            // Past attempts from the log, the current one from the record.
            attempts: format!(
                "SELECT attempt, worker, {} AS started_at, {} AS ended_at, outcome, error, cost
                 FROM {attempts} WHERE key = $1
                 UNION ALL
                 SELECT attempt, coalesce(worker, ''), {} AS started_at,
                        CASE WHEN status = 'running' THEN NULL ELSE {} END AS ended_at,
                        attempt_outcome, error, cost
                 FROM {records} WHERE key = $1
                 ORDER BY attempt",
                ms("started_at"),
                ms("ended_at"),
                ms("attempt_started_at"),
                ms("updated_at"),
            ),
            // $1 op, $2 status, $3 updated-before ms, $4 limit. Never the snapshot column.
            // Ordered by the table's columns (`r.`: the output's `updated_at` is milliseconds),
            // so with an op it is one range of the `op` index, read backwards.
            list: format!(
                "SELECT {} FROM {records} r
                 WHERE ($1::text IS NULL OR op = $1) AND ($2::text IS NULL OR status = $2)
                   AND ($3::int8 IS NULL OR r.updated_at < to_timestamp($3::float8 / 1000))
                 ORDER BY r.updated_at DESC, r.key LIMIT $4",
                listed_columns()
            ),
            // $1 ops, $2 units, $3 amounts, $4 replays: one statement adds every line.
            add_avoided: format!(
                "INSERT INTO {costs_avoided} AS c (op, unit, amount, replays)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::int8[])
                 ON CONFLICT (op, unit) DO UPDATE
                 SET amount = c.amount + excluded.amount, replays = c.replays + excluded.replays"
            ),
            // $1 op (NULL: every one). What attempts spent (the records' current attempts and
            // the log's past ones) and what replays avoided, by operation and unit. An
            // operator's read: it scans the records that carry a cost.
            costs: format!(
                "WITH spent AS (
                     SELECT r.op, j.key AS unit, sum(j.value::float8) AS amount
                     FROM {records} r, jsonb_each_text(r.cost::jsonb) j
                     WHERE r.cost IS NOT NULL AND ($1::text IS NULL OR r.op = $1)
                     GROUP BY 1, 2
                     UNION ALL
                     SELECT r.op, j.key, sum(j.value::float8)
                     FROM {attempts} a JOIN {records} r ON r.key = a.key,
                          jsonb_each_text(a.cost::jsonb) j
                     WHERE a.cost IS NOT NULL AND ($1::text IS NULL OR r.op = $1)
                     GROUP BY 1, 2
                 ), lines AS (
                     SELECT op, unit, amount AS spent, 0::float8 AS avoided, 0::int8 AS replays
                     FROM spent
                     UNION ALL
                     SELECT op, unit, 0::float8, amount, replays FROM {costs_avoided}
                     WHERE $1::text IS NULL OR op = $1
                 )
                 SELECT op, unit, sum(spent)::float8, sum(avoided)::float8, sum(replays)::int8
                 FROM lines GROUP BY op, unit ORDER BY op, unit"
            ),
            // $1 parent key. A run's steps, in order, from the partial parent index.
            children: format!(
                "SELECT {} FROM {records} WHERE parent = $1 ORDER BY position, created_at, key",
                listed_columns()
            ),
            // $1 op. Counted by the server, by its clock; no snapshot is read. An operator's
            // read: it scans the records (an index or a summary kept by triggers would make
            // every claim and completion pay for it; docs/performance.md).
            counts: format!(
                "SELECT op, count(*)::int8,
                        count(*) FILTER (WHERE status = 'running')::int8,
                        count(*) FILTER (WHERE status = 'running' AND lease_until < {NOW})::int8,
                        count(*) FILTER (WHERE status = 'completed')::int8,
                        count(*) FILTER (WHERE status = 'failed')::int8,
                        coalesce(sum(attempt), 0)::int8
                 FROM {records} WHERE $1::text IS NULL OR op = $1
                 GROUP BY op ORDER BY op"
            ),
            // $1 key, $2 attempt, $3 first chunk number, $4 offsets (ms), $5 chunks. One
            // statement, so one round trip and one snapshot:
            // - `owner` is the fence: the record, only if it is `running` with this attempt.
            //   `FOR KEY SHARE` (the lock a foreign key takes) holds off a concurrent forget or
            //   purge until this statement commits, so their trigger then deletes these chunks
            //   too (without it, chunks inserted beside a delete would outlive their record;
            //   `appends_racing_a_forget_leave_no_chunks`). It conflicts with no update that
            //   leaves the key alone, so heartbeats, completions and claims never wait for it.
            // - `dropped`: the first append of an attempt (`first` = 0) deletes the chunks of
            //   the key's earlier attempts, which can never write again.
            // - `added`: the chunks, numbered from `first` by their position in the arrays
            //   (`WITH ORDINALITY` counts from 1), only after a chunk `first - 1` (a gap would
            //   make readers skip chunk numbers, as in the memory store); a chunk number already
            //   journaled is left as it is (a retried append).
            // No row back: the fence is lost, nothing was written. Otherwise `waiters`: someone
            // was told `running`, so the store sends `notify` and followers of the stream wake.
            append_chunks: format!(
                "WITH owner AS (
                     SELECT waiters FROM {records}
                     WHERE key = $1 AND attempt = $2 AND status = 'running'
                     FOR KEY SHARE
                 ), dropped AS (
                     DELETE FROM {chunks}
                     WHERE $3::int8 = 0 AND key = $1 AND attempt < $2
                       AND EXISTS (SELECT 1 FROM owner)
                 ), added AS (
                     INSERT INTO {chunks} (key, attempt, seq, offset_ms, chunk)
                     SELECT $1, $2, $3::int8 + c.ord - 1, c.offset_ms, c.chunk
                     FROM unnest($4::int4[], $5::bytea[]) WITH ORDINALITY AS c(offset_ms, chunk, ord)
                     WHERE EXISTS (SELECT 1 FROM owner)
                       AND ($3::int8 = 0 OR EXISTS (SELECT 1 FROM {chunks}
                                                    WHERE key = $1 AND attempt = $2
                                                      AND seq = $3::int8 - 1))
                     ON CONFLICT DO NOTHING
                 )
                 SELECT waiters FROM owner"
            ),
            // $1 key, $2 attempt, $3 from, $4 limit: one range of the primary key, in order.
            read_chunks: format!(
                "SELECT offset_ms, chunk FROM {chunks}
                 WHERE key = $1 AND attempt = $2 AND seq >= $3 ORDER BY seq LIMIT $4"
            ),
            // $1 key, $2 attempt.
            count_chunks: format!(
                "SELECT count(*) FROM {chunks} WHERE key = $1 AND attempt = $2"
            ),
        }
    }
}
