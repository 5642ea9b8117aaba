//! Purge of the PostgreSQL store in bounded batches, none of which scans the records table.
//!
//! A purge (the caller loops on [`Store::purge_expired`](crate::store::Store::purge_expired)
//! until a batch comes back short) has two phases:
//!
//! 1. **Expired** completed and failed records, from the `expires_at` index, in the index's
//!    order. Each batch starts where the last one ended (a cursor on `expires_at`), so no batch
//!    walks again over the index entries of rows earlier batches deleted (dead until vacuum).
//! 2. **Abandoned** running records (lease expired more than `abandoned_after` ago), which no
//!    index finds: an index on `status` or `lease_until` would make every completion and every
//!    heartbeat a non-HOT update. Instead one sweep over the table's pages per purge, a window
//!    of [`SWEEP_PAGES`] pages per statement (a TID range scan: only those pages are read), the
//!    next window where the last ended. A batch is thus bounded by its window, and the whole
//!    purge reads the table once, whatever the number of batches.
//!
//! The cursors live in the store (one purge at a time per store handle is the expected use; a
//! second concurrent purge on the same handle only shares the cursor, it cannot delete
//! anything twice: every delete re-checks its row under `FOR UPDATE SKIP LOCKED`). A row that
//! moves behind the sweep (an update that left its page) waits for the next purge.

use super::schema::Names;
use std::sync::Mutex;

/// The server's clock, fixed within a statement.
const NOW: &str = "statement_timestamp()";

/// Heap pages one abandoned-record statement reads (8 MB with the default 8 kB pages).
pub(super) const SWEEP_PAGES: i64 = 1024;

/// The purge statements of one store.
#[derive(Debug)]
pub(super) struct PurgeSql {
    /// $1 batch, $2 cursor (ms since the epoch, or NULL): deletes up to `batch` expired
    /// completed or failed records from the cursor on; returns how many, and the latest
    /// `expires_at` deleted (ms, rounded down: the next batch's cursor).
    pub(super) expired: String,
    /// $1 first page, $2 page past the window, $3 abandoned-after ms, $4 at most this many:
    /// deletes abandoned running records of those pages; returns how many.
    pub(super) abandoned: String,
    /// The records table's size in pages, when a sweep starts.
    pub(super) pages: String,
}

/// What every delete of purge also does: delete the records' past attempts (their chunks go by
/// trigger) and raise the attempt floor to the highest attempt deleted, in the same statement,
/// so attempt numbers never go back.
fn delete_doomed(names: &Names, returning: &str) -> String {
    let Names {
        records,
        attempts,
        meta,
        ..
    } = names;
    format!(
        "gone AS (
             DELETE FROM {records} r USING doomed d WHERE r.key = d.key
             RETURNING r.key, r.attempt{returning}
         ), log_gone AS (
             DELETE FROM {attempts} a USING gone g WHERE a.key = g.key
         ), floor AS (
             UPDATE {meta} SET value = greatest(value, (SELECT max(attempt) FROM gone))
             WHERE name = 'attempt_floor' AND EXISTS (SELECT 1 FROM gone)
         )"
    )
}

impl PurgeSql {
    pub(super) fn new(names: &Names) -> Self {
        let records = &names.records;
        let expired = "expires_at <= statement_timestamp() AND status <> 'running'";
        let abandoned = format!(
            "status = 'running' AND lease_until <= {NOW} - $3::float8 * interval '1 millisecond'"
        );
        Self {
            // The candidates come from the index range [cursor, now]; `FOR UPDATE SKIP LOCKED`
            // re-checks each on its newest version and skips rows a claim holds, so purge never
            // waits for (nor blocks for long) a claimer.
            expired: format!(
                "WITH doomed AS (
                     SELECT key FROM {records}
                     WHERE key = ANY (ARRAY(
                               SELECT key FROM {records}
                               WHERE expires_at >= coalesce(to_timestamp($2::float8 / 1000),
                                                            '-infinity')
                                 AND {expired}
                               ORDER BY expires_at LIMIT $1))
                       AND {expired}
                     FOR UPDATE SKIP LOCKED
                 ), {}
                 SELECT count(*), (floor(date_part('epoch', max(expires_at)) * 1000))::int8
                 FROM gone",
                delete_doomed(names, ", r.expires_at")
            ),
            // A TID range scan: `ctid` bounds computed from parameters are still the scan's
            // range (checked with EXPLAIN), so only the window's pages are read.
            abandoned: format!(
                "WITH doomed AS (
                     SELECT key FROM {records}
                     WHERE ctid >= ('(' || $1::int8 || ',0)')::tid
                       AND ctid < ('(' || $2::int8 || ',0)')::tid
                       AND {abandoned}
                     LIMIT $4
                     FOR UPDATE SKIP LOCKED
                 ), {}
                 SELECT count(*) FROM gone",
                delete_doomed(names, "")
            ),
            pages: format!(
                "SELECT pg_relation_size('{}'::regclass)
                        / current_setting('block_size')::int8",
                records.replace('\'', "''")
            ),
        }
    }
}

/// Where the current purge is: the expired phase's cursor, then the sweep's next page.
#[derive(Debug, Default)]
pub(super) struct PurgeCursor(Mutex<Phase>);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Expired records, from the start of the `expires_at` index.
    #[default]
    Expired,
    /// Expired records, from this `expires_at` on (ms since the epoch).
    ExpiredFrom(i64),
    /// Abandoned records, from this page on, of a table of `pages` pages (as it was when the
    /// sweep began: pages added since hold rows too new to be abandoned).
    Sweep { page: i64, pages: i64 },
}

impl PurgeCursor {
    pub(super) fn get(&self) -> Phase {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn set(&self, phase: Phase) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = phase;
    }
}
