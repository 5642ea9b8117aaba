//! Transactional steps on PostgreSQL: the claim, the caller's own writes and the
//! snapshot commit in one transaction, so a crash at any instant (of the worker, its connection
//! or the server) leaves either nothing or everything: exactly-once database writes across a
//! fleet of workers.
//!
//! ```
//! use idem_runtime::store::postgres::{PostgresStore, Step};
//! use idem_runtime::{Call, Error};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
//! # let url = std::env::var("IDEM_TEST_POSTGRES_URL")
//! #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
//! # let schema = format!("idem_doc_{}", std::process::id());
//! # let store = match PostgresStore::builder(&url).schema(&schema).open().await {
//! #     Ok(store) => store,
//! #     Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
//! #         eprintln!("*** SKIPPED: no PostgreSQL at {url}: {e} ***");
//! #         return Ok(());
//! #     }
//! #     Err(e) => return Err(e),
//! # };
//! let orders = format!("\"{}\".orders", store.schema());
//! sqlx::query(&format!("CREATE TABLE {orders} (id text)")).execute(store.pool()).await?;
//! for _ in 0..3 {
//!     let count: i64 = match store.begin_step(Call::new("save_order").key("o-1"), "worker-a").await? {
//!         Step::Replayed(count) => count,
//!         Step::Claimed(mut tx) => {
//!             let done = sqlx::query(&format!("INSERT INTO {orders} (id) VALUES ('o-1')"))
//!                 .execute(tx.conn())
//!                 .await?;
//!             let count = done.rows_affected() as i64;
//!             tx.commit(&count).await?; // the row and the snapshot, atomically
//!             count
//!         }
//!     };
//!     assert_eq!(count, 1);
//! }
//! let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {orders}"))
//!     .fetch_one(store.pool())
//!     .await?;
//! assert_eq!(rows, 1);
//! # sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE")).execute(store.pool()).await?;
//! # Ok(()) }
//! ```
//!
//! While a step's transaction is open it holds the key's record row lock (its claim inserted or
//! updated the row, uncommitted) and the key's advisory lock. No other claim of the key waits
//! for it inside a statement (see `locks.rs`):
//!
//! - another step tries the advisory lock first, without waiting, and is told `running` when it
//!   is held;
//! - an ordinary call's claim statement gives up on the row lock after the store's lock timeout
//!   (50 ms by default) and is told `running` too (attempt 0: the step's attempt is not
//!   visible); its later looks ask about the advisory lock without waiting.
//!
//! Both then wait as for any running attempt, without holding a connection: polling (a step's
//! commit notifies nobody), bounded by their `wait`, or `InProgress` at once with
//! `on_conflict(OnConflict::Error)`. When the step commits they replay; when it rolls back one
//! of them claims. A step turns the lock timeout off for its own transaction (its writes and
//! the caller's are never cut short). So keep a step to database writes, and do slow work (an
//! LLM call) in an ordinary step before it.

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::postgres::PgTransactionManager;
use sqlx::{PgConnection, Row, TransactionManager};

use super::batch::{acquired_attempts, insert_new, update_completed, Completion, NewKey};
use super::conn::Held;
use super::locks::step_lock_id;
use super::PostgresStore;
use crate::call::{Call, KeyedCall};
use crate::error::Error;
use crate::key::Key;
use crate::store::step::{still_owned, Next, StepSnapshot, StepWait};
use crate::store::{AttemptRef, ClaimRequest, CompletionRow, Fence, Outcome};

/// What [`PostgresStore::begin_step`] found.
// Returned once per step and matched at once: boxing the transaction would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step<T> {
    /// The key has a recorded outcome: here it is; nothing else to do.
    Replayed(T),
    /// The caller owns a new attempt inside an open transaction: write through
    /// [`StepTx::conn`], then [`StepTx::commit`] the result. Dropping it rolls everything back,
    /// the claim included.
    Claimed(StepTx),
}

/// A transaction on one of the store's connections (see `conn.rs`: it skips sqlx's release
/// round trip, as the store's other hot statements do). Dropped while open, it rolls back off
/// the caller's path, and a connection that cannot roll back is closed.
#[derive(Debug)]
struct OpenTx {
    held: Option<Held>,
}

impl OpenTx {
    /// Begins through sqlx's transaction manager, so that sqlx knows the connection is in a
    /// transaction: a caller's own `begin()` on [`StepTx::conn`] then opens a savepoint instead
    /// of committing the step early. The guard exists before `BEGIN` is sent, so a caller
    /// cancelled during it still rolls back.
    async fn begin(store: &PostgresStore, call: &KeyedCall) -> Result<Self, Error> {
        let held = store.held("claim", &call.op, &call.key).await?;
        let mut tx = Self { held: Some(held) };
        PgTransactionManager::begin(tx.conn()?, None)
            .await
            .map_err(|e| Error::store("claim", &call.op, &call.key, e))?;
        Ok(tx)
    }

    fn conn(&mut self) -> Result<&mut PgConnection, Error> {
        // Only `commit` takes the connection, and it consumes the transaction.
        self.held
            .as_mut()
            .map(Held::conn)
            .ok_or_else(|| Error::Config("the step's transaction has ended".into()))
    }

    async fn commit(mut self, call: &KeyedCall) -> Result<(), Error> {
        let conn = self.conn()?;
        // A savepoint the caller opened and left open would make the `COMMIT` below only
        // release it, and leave the step uncommitted.
        if PgTransactionManager::get_transaction_depth(conn) != 1 {
            return Err(Error::store(
                "commit",
                &call.op,
                &call.key,
                "a transaction the step's caller opened on its connection is still open",
            ));
        }
        PgTransactionManager::commit(conn)
            .await
            .map_err(|e| Error::store("commit", &call.op, &call.key, e))?;
        if let Some(held) = self.held.take() {
            held.done();
        }
        Ok(())
    }
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.roll_back_and_done();
        }
    }
}

/// An open transactional step: the claim is made, not yet committed.
#[derive(Debug)]
pub struct StepTx {
    tx: OpenTx,
    call: KeyedCall,
    attempt: u64,
    store: PostgresStore,
}

impl StepTx {
    /// The connection of the step's transaction: the caller's writes go here.
    pub fn conn(&mut self) -> &mut PgConnection {
        match self.tx.held.as_mut() {
            Some(held) => held.conn(),
            // A `StepTx` holds its connection until `commit` consumes it.
            None => unreachable!("an open step has its connection"),
        }
    }

    /// The step's key (for an `Idempotency-Key` header or a row column).
    pub fn key(&self) -> Key {
        self.call.key
    }

    /// This attempt's number.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// Records `value` as the step's snapshot and commits it together with the caller's writes.
    /// On error nothing is committed, and the next call runs the step again.
    pub async fn commit<T: Serialize>(mut self, value: &T) -> Result<(), Error> {
        let snapshot = StepSnapshot::of(&self.call, value)?;
        let (attempt, outcome) = snapshot.completion(&self.call, self.attempt);
        let (fence, waiters) = self
            .store
            .complete_on(self.tx.conn()?, &attempt, outcome)
            .await?;
        still_owned(fence, &self.call)?;
        self.tx.commit(&self.call).await?;
        // Other claims of the key were told `running` without a look at the uncommitted record,
        // and none can flag it: `waiters` is false here, and they poll. Should it ever be set,
        // waking the waiter beats leaving it to poll.
        if waiters {
            self.store.notify(&self.call.op, &self.call.key).await;
        }
        Ok(())
    }
}

impl PostgresStore {
    /// Starts a transactional step: in one transaction, claims the key and, if it is new (or
    /// failed, or expired, or abandoned by a crashed ordinary call), hands the open transaction
    /// to the caller (see [`Step`]).
    ///
    /// A record left `running` by a live ordinary call is waited for as in
    /// [`crate::Idem::call`]. A failed transactional attempt leaves no record and no
    /// attempts-log line: its rollback removed them with its writes.
    pub async fn begin_step<T: DeserializeOwned>(
        &self,
        call: Call,
        worker: &str,
    ) -> Result<Step<T>, Error> {
        let call = call.keyed()?;
        let mut waiting = StepWait::new();
        loop {
            let mut tx = OpenTx::begin(self, &call).await?;
            let request = ClaimRequest::of(&call, worker);
            let claim = self.claim_with(tx.conn()?, &request, true).await?;
            match waiting.next(&call, claim)? {
                Next::Run(attempt) => {
                    return Ok(Step::Claimed(StepTx {
                        tx,
                        call,
                        attempt,
                        store: self.clone(),
                    }))
                }
                Next::Replay(value) => return Ok(Step::Replayed(value)),
                Next::Sleep(pause) => {
                    drop(tx);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

impl PostgresStore {
    /// The claims of the new keys among a group of steps in one transaction (a consumer's group
    /// commit), in one statement: each request's attempt when its key had no record and its
    /// step lock was free, else `None` (that step then claims as alone: a replay, a run after
    /// a failure, a key held elsewhere). A key asked twice is claimed for its first request
    /// only. Rows are inserted in key order, as batches are.
    pub(crate) async fn claim_new_steps(
        &self,
        conn: &mut PgConnection,
        requests: &[ClaimRequest<'_>],
    ) -> Result<Vec<Option<u64>>, Error> {
        let Some(first) = requests.first() else {
            return Ok(Vec::new());
        };
        // Stable: of the requests for one key, the first one stays.
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| *requests[i].key);
        order.dedup_by_key(|i| *requests[*i].key);
        let items: Vec<NewKey> = order.iter().map(|&i| NewKey::of(&requests[i])).collect();
        let refs: Vec<&NewKey> = items.iter().collect();
        let locks = order
            .iter()
            .map(|&i| step_lock_id(requests[i].key))
            .collect();
        let sql = &self.inner.sql.claim_new_step_batch;
        let rows = insert_new(conn, sql, &refs, Some(locks))
            .await
            .map_err(|e| Error::store("claim", first.op, first.key, e))?;
        let acquired = acquired_attempts(&rows).ok_or_else(|| Error::Corrupt {
            op: first.op.to_owned(),
            key: *first.key,
            reason: "a batched claim returned a row that does not decode".into(),
        })?;
        let mut attempts = vec![None; requests.len()];
        for i in order {
            attempts[i] = acquired
                .get(&requests[i].key.0[..])
                .and_then(|&attempt| u64::try_from(attempt).ok());
        }
        Ok(attempts)
    }

    /// The completions of steps claimed by [`Self::claim_new_steps`], in one statement, in
    /// their transaction: each one's fence (no key twice).
    pub(crate) async fn complete_steps(
        &self,
        conn: &mut PgConnection,
        done: &[(AttemptRef<'_>, Outcome<'_>)],
    ) -> Result<Vec<Fence>, Error> {
        let Some((first, _)) = done.first() else {
            return Ok(Vec::new());
        };
        let items: Vec<Completion> = done
            .iter()
            .map(|(a, outcome)| {
                Completion::of(a.key, a.op, a.attempt, CompletionRow::from(*outcome))
            })
            .collect();
        let refs: Vec<&Completion> = items.iter().collect();
        let rows = update_completed(conn, &self.inner.sql.complete_batch, &refs)
            .await
            .map_err(|e| Error::store("complete", first.op, first.key, e))?;
        let mut owned = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            let key: Vec<u8> = row.try_get(0).map_err(|e| Error::Corrupt {
                op: first.op.to_owned(),
                key: *first.key,
                reason: e.to_string(),
            })?;
            owned.insert(key);
        }
        Ok(done
            .iter()
            .map(|(a, _)| {
                if owned.contains(&a.key.0[..]) {
                    Fence::Owned
                } else {
                    Fence::Lost
                }
            })
            .collect())
    }
}
