//! Many claims of new keys in one `INSERT`, many completions in one `UPDATE`: the batched forms
//! of `claim_new` and `complete` (`sql.rs`), fed by the combiners (`combine.rs`) when more
//! statements of a kind are pending than the store lets run at once. Only while callers wait
//! for the pool: with connections to spare, a queued caller would wait for nothing and
//! throughput drops (docs/performance.md has the measurements).
//!
//! A batch is one autocommit statement over arrays (`unnest`), so its rows share one round
//! trip, one transaction and one WAL flush; each row is decided exactly as its single-row
//! statement would decide it (the same columns, the same fence). Rows are sent sorted by key,
//! so two batches that touch the same keys lock them in the same order. A key twice in one
//! batch is left out of it (its caller runs its own statement after the batch commits), so each
//! returned row answers exactly one caller. A batch that times out on a lock or meets a
//! deadlock wrote nothing: its callers run their own statements, which wait and retry as alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::combine::{Combiner, Entry, Runner, Way};
use super::conn::Connections;
use super::locks::{lock_timed_out, Blocked};
use super::rows::{attempt_i64, Inserted};
use super::sql::Sql;
use crate::error::Error;
use crate::key::Key;
use crate::store::{millis, AttemptRef, ClaimRequest, CompletionRow, Fence, Outcome};

/// How many batches a store sent, and how many claims and completions they carried (a caller
/// that went alone is in none of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStats {
    /// Batched claim statements sent.
    pub claim_batches: u64,
    /// Claims of new keys they carried.
    pub claims: u64,
    /// Batched completion statements sent.
    pub completion_batches: u64,
    /// Completions they carried.
    pub completions: u64,
}

/// Counters of one kind of batch.
#[derive(Debug, Default)]
struct Counted {
    batches: AtomicU64,
    rows: AtomicU64,
}

impl Counted {
    fn add(&self, rows: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

/// The two queues of a store, with their runners.
pub(super) struct Batches {
    conns: Arc<Connections>,
    claim_count: Arc<Counted>,
    completion_count: Arc<Counted>,
    claims: Arc<Combiner<NewKey, Inserted>>,
    claim_runner: Runner<NewKey, Inserted>,
    completions: Arc<Combiner<Completion, Completed>>,
    complete_runner: Runner<Completion, Completed>,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("claims", &self.claims)
            .field("completions", &self.completions)
            .finish_non_exhaustive()
    }
}

impl Batches {
    pub(super) fn new(
        conns: &Arc<Connections>,
        sql: &Sql,
        blocked: &Arc<Blocked>,
        after: usize,
    ) -> Self {
        let (claim_count, completion_count) = (Arc::default(), Arc::default());
        Self {
            claims: Combiner::new(after, MAX_BATCH),
            claim_runner: claim_runner(
                Arc::clone(conns),
                sql.claim_new_batch.as_str().into(),
                Arc::clone(blocked),
                Arc::clone(&claim_count),
            ),
            completions: Combiner::new(after, MAX_BATCH),
            complete_runner: complete_runner(
                Arc::clone(conns),
                sql.complete_batch.as_str().into(),
                Arc::clone(&completion_count),
            ),
            claim_count,
            completion_count,
            conns: Arc::clone(conns),
        }
    }

    /// The counters so far.
    pub(super) fn stats(&self) -> BatchStats {
        BatchStats {
            claim_batches: self.claim_count.batches.load(Ordering::Relaxed),
            claims: self.claim_count.rows.load(Ordering::Relaxed),
            completion_batches: self.completion_count.batches.load(Ordering::Relaxed),
            completions: self.completion_count.rows.load(Ordering::Relaxed),
        }
    }

    /// Enters a claim of a key without a record, when batching may pay: while callers wait
    /// for the pool (`None`: the pool has room, the caller goes alone at once).
    pub(super) fn claim(&self, req: &ClaimRequest<'_>) -> Option<Way<NewKey, Inserted>> {
        self.conns
            .callers_waiting()
            .then(|| self.claims.enter(&self.claim_runner, || NewKey::of(req)))
    }

    /// Enters a completion while callers wait for the pool (a large snapshot always goes
    /// alone: it is copied nowhere).
    pub(super) fn complete(
        &self,
        a: &AttemptRef<'_>,
        outcome: Outcome<'_>,
    ) -> Option<Way<Completion, Completed>> {
        if !self.conns.callers_waiting()
            || matches!(outcome, Outcome::Snapshot { bytes, .. } if bytes.len() > MAX_BATCHED_SNAPSHOT)
        {
            return None;
        }
        Some(self.completions.enter(&self.complete_runner, || {
            Completion::of(a.key, a.op, a.attempt, CompletionRow::from(outcome))
        }))
    }
}

/// The largest snapshot a batched completion carries (a larger one is copied nowhere: its
/// completion goes alone).
pub(super) const MAX_BATCHED_SNAPSHOT: usize = 16 * 1024;

/// The most rows in one batch.
pub(super) const MAX_BATCH: usize = 128;

/// A claim of a key without a record, owned (it waits in a queue).
pub(super) struct NewKey {
    key: Key,
    op: String,
    fingerprint: Option<Vec<u8>>,
    lease_ms: i64,
    worker: String,
    ttl_ms: i64,
    parent: Option<Vec<u8>>,
    position: Option<i64>,
}

impl NewKey {
    pub(super) fn of(req: &ClaimRequest<'_>) -> Self {
        Self {
            key: *req.key,
            op: req.op.to_owned(),
            fingerprint: req.fingerprint.map(|f| f.0.to_vec()),
            lease_ms: millis(req.lease),
            worker: req.worker.to_owned(),
            ttl_ms: millis(req.ttl),
            parent: req.parent.map(|p| p.key.0.to_vec()),
            position: req.parent.map(|p| i64::from(p.position)),
        }
    }
}

/// A completion, owned.
pub(super) struct Completion {
    key: Key,
    op: String,
    attempt: i64,
    status: &'static str,
    snapshot: Option<Vec<u8>>,
    snapshot_kind: Option<&'static str>,
    error: Option<String>,
    ttl_ms: i64,
    attempt_outcome: &'static str,
    cost: Option<String>,
}

impl Completion {
    pub(super) fn of(key: &Key, op: &str, attempt: u64, row: CompletionRow<'_>) -> Self {
        Self {
            key: *key,
            op: op.to_owned(),
            attempt: attempt_i64(attempt),
            status: row.status,
            snapshot: row.snapshot.map(<[u8]>::to_vec),
            snapshot_kind: row.snapshot_kind,
            error: row.error.map(str::to_owned),
            ttl_ms: row.ttl_ms,
            attempt_outcome: row.attempt_outcome,
            cost: row.cost,
        }
    }
}

/// A batch's answer to a completion: the fence, and whether someone waits for the outcome.
pub(super) type Completed = Result<(Fence, bool), Error>;

/// Whether a failed batch wrote nothing and its callers may simply go alone.
fn retry_alone(e: &sqlx::Error) -> bool {
    lock_timed_out(e)
        || matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01"))
}

/// A batch's entries with distinct keys, and the ones left out of it.
type Split<T, R> = (Vec<Entry<T, R>>, Vec<Entry<T, R>>);

/// Sends each entry of a batch its answer and each entry left out of it `None` (it goes
/// alone); counts the batch when it `decided` its entries.
fn reply<T, R>(
    entries: Vec<Entry<T, R>>,
    answers: Vec<Option<R>>,
    again: Vec<Entry<T, R>>,
    count: &Counted,
    decided: bool,
) {
    if decided {
        count.add(entries.len());
    }
    for (entry, answer) in entries.into_iter().zip(answers) {
        let _ = entry.reply.send(answer);
    }
    for entry in again {
        let _ = entry.reply.send(None);
    }
}

/// Sorts a batch by key and splits off the entries whose key is already in it.
fn distinct_by_key<T, R>(mut entries: Vec<Entry<T, R>>, key: impl Fn(&T) -> Key) -> Split<T, R> {
    entries.sort_by_key(|e| key(&e.item));
    let mut again = Vec::new();
    let mut distinct: Vec<Entry<T, R>> = Vec::with_capacity(entries.len());
    for entry in entries {
        if distinct
            .last()
            .is_some_and(|d| key(&d.item) == key(&entry.item))
        {
            again.push(entry);
        } else {
            distinct.push(entry);
        }
    }
    (distinct, again)
}

/// The runner of batched claims of new keys (statement `claim_new_batch`).
fn claim_runner(
    conns: Arc<Connections>,
    sql: Arc<str>,
    blocked: Arc<Blocked>,
    count: Arc<Counted>,
) -> Runner<NewKey, Inserted> {
    Arc::new(move |entries| {
        let (conns, sql, count) = (Arc::clone(&conns), Arc::clone(&sql), Arc::clone(&count));
        let blocked = Arc::clone(&blocked);
        Box::pin(async move {
            // A key found locked by an open step since it queued would hold the whole batch
            // for the lock timeout: its caller goes alone (and asks whether a step holds it).
            let (entries, mut again) = distinct_by_key(entries, |n: &NewKey| n.key);
            let (entries, locked): (Vec<_>, Vec<_>) = entries
                .into_iter()
                .partition(|e| !blocked.contains(&e.item.key));
            again.extend(locked);
            let answers = claim_batch(&conns, &sql, &entries).await;
            let decided = answers.first().is_some_and(Option::is_some);
            reply(entries, answers, again, &count, decided);
        })
    })
}

/// Runs one batch of new-key claims: each entry's answer, or `None` for all when the batch
/// failed (each caller then runs its own statement, which reports its own typed error).
async fn claim_batch(
    conns: &Arc<Connections>,
    sql: &str,
    entries: &[Entry<NewKey, Inserted>],
) -> Vec<Option<Inserted>> {
    let none = || entries.iter().map(|_| None).collect();
    let Ok(mut held) = conns.get().await else {
        return none();
    };
    let items: Vec<&NewKey> = entries.iter().map(|e| &e.item).collect();
    let rows = insert_new(held.conn(), sql, &items, None).await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(error = %e, rows = entries.len(), "idem: a batched claim goes alone");
            return none();
        }
    };
    held.done();
    let Some(acquired) = acquired_attempts(&rows) else {
        // A row that does not decode: the callers go alone and report it typed.
        return none();
    };
    entries
        .iter()
        .map(|e| match acquired.get(&e.item.key.0[..]) {
            Some(&attempt) => u64::try_from(attempt).ok().map(Inserted::Acquired),
            None => Some(Inserted::HasRecord),
        })
        .collect()
}

/// The attempt of each key a batched claim inserted, or `None` if a row does not decode.
pub(super) fn acquired_attempts(rows: &[PgRow]) -> Option<HashMap<Vec<u8>, i64>> {
    let mut acquired = HashMap::with_capacity(rows.len());
    for row in rows {
        let key = row.try_get::<Vec<u8>, _>(0).ok()?;
        let attempt = row.try_get::<i64, _>(1).ok()?;
        acquired.insert(key, attempt);
    }
    Some(acquired)
}

/// Runs a batched claim statement (`claim_new_batch`, or `claim_new_step_batch` with the
/// keys' step `locks`) for `items` on `conn`.
pub(super) async fn insert_new(
    conn: &mut PgConnection,
    sql: &str,
    items: &[&NewKey],
    locks: Option<Vec<i64>>,
) -> Result<Vec<PgRow>, sqlx::Error> {
    let query = sqlx::query(sql)
        .bind(items.iter().map(|n| n.key.0.to_vec()).collect::<Vec<_>>())
        .bind(items.iter().map(|n| n.op.as_str()).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|n| n.fingerprint.clone())
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|n| n.lease_ms).collect::<Vec<_>>())
        .bind(items.iter().map(|n| n.worker.as_str()).collect::<Vec<_>>())
        .bind(items.iter().map(|n| n.ttl_ms).collect::<Vec<_>>())
        .bind(items.iter().map(|n| n.parent.clone()).collect::<Vec<_>>())
        .bind(items.iter().map(|n| n.position).collect::<Vec<_>>());
    match locks {
        Some(locks) => query.bind(locks).fetch_all(conn).await,
        None => query.fetch_all(conn).await,
    }
}

/// Runs `complete_batch` for `items` on `conn`.
pub(super) async fn update_completed(
    conn: &mut PgConnection,
    sql: &str,
    items: &[&Completion],
) -> Result<Vec<PgRow>, sqlx::Error> {
    sqlx::query(sql)
        .bind(items.iter().map(|c| c.key.0.to_vec()).collect::<Vec<_>>())
        .bind(items.iter().map(|c| c.attempt).collect::<Vec<_>>())
        .bind(items.iter().map(|c| c.status).collect::<Vec<_>>())
        .bind(items.iter().map(|c| c.snapshot.clone()).collect::<Vec<_>>())
        .bind(items.iter().map(|c| c.snapshot_kind).collect::<Vec<_>>())
        .bind(items.iter().map(|c| c.error.clone()).collect::<Vec<_>>())
        .bind(items.iter().map(|c| c.ttl_ms).collect::<Vec<_>>())
        .bind(items.iter().map(|c| c.attempt_outcome).collect::<Vec<_>>())
        .bind(items.iter().map(|c| c.cost.clone()).collect::<Vec<_>>())
        .fetch_all(conn)
        .await
}

/// The runner of batched completions (statement `complete_batch`).
fn complete_runner(
    conns: Arc<Connections>,
    sql: Arc<str>,
    count: Arc<Counted>,
) -> Runner<Completion, Completed> {
    Arc::new(move |entries| {
        let (conns, sql, count) = (Arc::clone(&conns), Arc::clone(&sql), Arc::clone(&count));
        Box::pin(async move {
            let (entries, again) = distinct_by_key(entries, |c: &Completion| c.key);
            let answers = complete_batch(&conns, &sql, &entries).await;
            let decided = answers.first().is_some_and(|a| matches!(a, Some(Ok(_))));
            reply(entries, answers, again, &count, decided);
        })
    })
}

/// Runs one batch of completions. A batch that wrote nothing (a lock wait timed out, a
/// deadlock, no connection) sends its callers alone; any other failure may have come after the
/// commit, so it is each caller's error, as it would be alone.
async fn complete_batch(
    conns: &Arc<Connections>,
    sql: &str,
    entries: &[Entry<Completion, Completed>],
) -> Vec<Option<Completed>> {
    let none = || entries.iter().map(|_| None).collect();
    let Ok(mut held) = conns.get().await else {
        return none();
    };
    let items: Vec<&Completion> = entries.iter().map(|e| &e.item).collect();
    let rows = update_completed(held.conn(), sql, &items).await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) if retry_alone(&e) => {
            tracing::debug!(error = %e, rows = entries.len(), "idem: a batched completion goes alone");
            return none();
        }
        Err(e) => {
            let message = e.to_string();
            return entries
                .iter()
                .map(|en| {
                    Some(Err(Error::store(
                        "complete",
                        &en.item.op,
                        &en.item.key,
                        message.clone(),
                    )))
                })
                .collect();
        }
    };
    held.done();
    let mut owned = HashMap::with_capacity(rows.len());
    for row in &rows {
        match (row.try_get::<Vec<u8>, _>(0), row.try_get::<bool, _>(1)) {
            (Ok(key), Ok(waiters)) => {
                owned.insert(key, waiters);
            }
            (Err(e), _) | (_, Err(e)) => {
                let message = e.to_string();
                return entries
                    .iter()
                    .map(|en| {
                        Some(Err(Error::Corrupt {
                            op: en.item.op.clone(),
                            key: en.item.key,
                            reason: message.clone(),
                        }))
                    })
                    .collect();
            }
        }
    }
    entries
        .iter()
        .map(|e| {
            Some(Ok(match owned.get(&e.item.key.0[..]) {
                Some(&waiters) => (Fence::Owned, waiters),
                None => (Fence::Lost, false),
            }))
        })
        .collect()
}
