//! Transactional steps: the claim, the caller's own writes and the snapshot commit
//! in one SQLite transaction, so a crash at any instant leaves either nothing or everything.
//!
//! While a step is open its transaction holds SQLite's write lock. Other callers do not wait
//! for it without need: a replay or a wait (of any key) is decided by a pure read first, which
//! WAL lets run beside the writer; a claim of the step's own key from the same process is told
//! `running` at once (the store knows its open steps' keys) and waits, or refuses, per its
//! options, as a second step of the key does. What still waits for the write lock (up to the
//! busy timeout) is any write: the claim of a key without a live record, and, from another
//! process, a claim of the open step's key (its record is not visible there until the commit).
//!
//! ```
//! use idem_runtime::store::sqlite::{SqliteStore, Step};
//! use idem_runtime::{Call, Error};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
//! let store = SqliteStore::open("sqlite::memory:").await?;
//! sqlx::query("CREATE TABLE orders (id TEXT)").execute(store.pool()).await?;
//! for _ in 0..3 {
//!     let row: i64 = match store.begin_step(Call::new("save_order").key("o-1"), "worker-a").await? {
//!         Step::Replayed(row) => row,
//!         Step::Claimed(mut tx) => {
//!             let done = sqlx::query("INSERT INTO orders (id) VALUES ('o-1')")
//!                 .execute(tx.conn())
//!                 .await?;
//!             let row = done.last_insert_rowid();
//!             tx.commit(&row).await?; // the row and the snapshot, atomically
//!             row
//!         }
//!     };
//!     assert_eq!(row, 1);
//! }
//! let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(store.pool()).await?;
//! assert_eq!(count, 1);
//! # Ok(()) }
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::open_steps::{uncommitted_attempt, OpenStep};
use super::{claim_on, complete_on, read_claim, SqliteStore};
use crate::call::{Call, KeyedCall};
use crate::error::Error;
use crate::key::Key;
use crate::store::step::{still_owned, Next, StepSnapshot, StepWait};
use crate::store::{Claim, ClaimRequest};

/// What [`SqliteStore::begin_step`] found.
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

/// An open transactional step: the claim is made, not yet committed.
#[derive(Debug)]
pub struct StepTx {
    tx: Transaction<'static, Sqlite>,
    call: KeyedCall,
    attempt: u64,
    /// The key's mark among this process's open steps, dropped after the transaction (the
    /// fields drop in order).
    _open: OpenStep,
}

impl StepTx {
    /// The connection of the step's transaction: the caller's writes go here.
    pub fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
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
        // The transaction holds SQLite's write lock, so the claim cannot be lost.
        still_owned(
            complete_on(&mut *self.tx, &attempt, outcome).await?,
            &self.call,
        )?;
        let call = self.call;
        self.tx
            .commit()
            .await
            .map_err(|e| Error::store("commit", &call.op, &call.key, e))
    }
}

impl SqliteStore {
    /// Starts a transactional step: in one `BEGIN IMMEDIATE` transaction, claims the key and,
    /// if it is new, hands the open transaction to the caller (see [`Step`]).
    ///
    /// The transaction holds SQLite's write lock until commit or drop, so keep the step to
    /// database writes: do slow work (an LLM call) in an ordinary `#[idempotent]` step before
    /// it. A record left `running` by a crashed non-transactional attempt is waited for like in
    /// [`crate::Idem::call`] (its lease must expire). A failed transactional attempt leaves no
    /// record and no attempts-log line: its rollback removed them with its writes.
    pub async fn begin_step<T: DeserializeOwned>(
        &self,
        call: Call,
        worker: &str,
    ) -> Result<Step<T>, Error> {
        let call = call.keyed()?;
        let mut waiting = StepWait::new();
        loop {
            let request = ClaimRequest::of(&call, worker);
            // Another step of this process has the key open: it is running (uncommitted), and
            // `BEGIN IMMEDIATE` would only wait for its write lock.
            let Some(open) = self.open_steps.enter(&call.key) else {
                match waiting.next::<T>(&call, uncommitted_attempt(request.lease))? {
                    Next::Sleep(pause) => {
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    // A `Running` claim only ever says sleep (or fails).
                    Next::Run(_) | Next::Replay(_) => continue,
                }
            };
            // A replay or a wait needs no write lock: decided by a read, it never waits
            // behind another key's open step. (Always read first: a step pays for its
            // transaction anyway, and its own mark above counts as an open step.)
            let claim = match read_claim(&self.pool, &request).await? {
                Some(claim) => claim,
                None => {
                    let mut tx = self
                        .pool
                        .begin_with("BEGIN IMMEDIATE")
                        .await
                        .map_err(|e| Error::store("claim", &call.op, &call.key, e))?;
                    let Some(claim) = claim_on(&mut *tx, &request).await? else {
                        continue;
                    };
                    if let Claim::Acquired { attempt, .. } = claim {
                        return Ok(Step::Claimed(StepTx {
                            tx,
                            call,
                            attempt,
                            _open: open,
                        }));
                    }
                    claim
                }
            };
            drop(open);
            match waiting.next(&call, claim)? {
                // Only a claim made in the transaction acquires (above).
                Next::Run(_) => continue,
                Next::Replay(value) => return Ok(Step::Replayed(value)),
                Next::Sleep(pause) => tokio::time::sleep(pause).await,
            }
        }
    }
}
