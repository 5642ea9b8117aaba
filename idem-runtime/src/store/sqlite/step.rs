//! Transactional steps (DESIGN §6): the claim, the caller's own writes and the snapshot commit
//! in one SQLite transaction, so a crash at any instant leaves either nothing or everything.
//!
//! ```
//! use idem_runtime::store::sqlite::{SqliteStore, Step};
//! use idem_runtime::{Call, Error};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
//! let store = SqliteStore::open("sqlite::memory:").await?;
//! let fail = |e: sqlx::Error| Error::Config(e.to_string());
//! sqlx::query("CREATE TABLE orders (id TEXT)").execute(store.pool()).await.map_err(fail)?;
//! for _ in 0..3 {
//!     let row: i64 = match store.begin_step(Call::new("save_order").key("o-1"), "worker-a").await? {
//!         Step::Replayed(row) => row,
//!         Step::Claimed(mut tx) => {
//!             let done = sqlx::query("INSERT INTO orders (id) VALUES ('o-1')")
//!                 .execute(tx.conn())
//!                 .await
//!                 .map_err(fail)?;
//!             let row = done.last_insert_rowid();
//!             tx.commit(&row).await?; // the row and the snapshot, atomically
//!             row
//!         }
//!     };
//!     assert_eq!(row, 1);
//! }
//! let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(store.pool()).await.map_err(fail)?;
//! assert_eq!(count, 1);
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::{claim_on, complete_on, SqliteStore};
use crate::call::{Call, Finished, OnConflict};
use crate::error::Error;
use crate::execute::{decode, fingerprints_differ, key_reuse, NoErrorCache, MAX_POLL};
use crate::key::Key;
use crate::record::SnapshotKind;
use crate::store::{AttemptRef, Claim, ClaimRequest, Fence, Outcome};

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
    call: Finished,
    attempt: u64,
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
        let (op, key) = (self.call.op.clone(), self.call.key);
        let bytes = serde_json::to_vec(value).map_err(|source| Error::SnapshotEncode {
            op: op.to_string(),
            key,
            source,
        })?;
        let attempt = AttemptRef {
            op: &op,
            key: &key,
            attempt: self.attempt,
        };
        let outcome = Outcome::Snapshot {
            kind: SnapshotKind::Ok,
            bytes: &bytes,
            ttl: self.call.options.ttl,
        };
        match complete_on(&mut *self.tx, &attempt, outcome).await? {
            Fence::Owned => {}
            // Unreachable while the transaction holds SQLite's write lock; checked anyway.
            Fence::Lost => {
                return Err(Error::store(
                    "complete",
                    &op,
                    &key,
                    "the step's claim was lost inside its own transaction",
                ))
            }
        }
        self.tx
            .commit()
            .await
            .map_err(|e| Error::store("commit", &op, &key, e))
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
        let call = call.finish();
        let started = Instant::now();
        let mut poll = Duration::from_millis(2);
        loop {
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| Error::store("claim", &call.op, &call.key, e))?;
            let request = ClaimRequest {
                op: &call.op,
                key: &call.key,
                fingerprint: call.fingerprint.as_ref(),
                lease: call.options.lease,
                ttl: call.options.ttl,
                worker,
            };
            match claim_on(&mut *tx, &request).await? {
                Some(Claim::Acquired { attempt, .. }) => {
                    return Ok(Step::Claimed(StepTx { tx, call, attempt }))
                }
                Some(Claim::Completed(snapshot)) => {
                    drop(tx);
                    if fingerprints_differ(snapshot.fingerprint.as_ref(), call.fingerprint.as_ref())
                    {
                        return Err(key_reuse(&call));
                    }
                    return decode::<T, Error, NoErrorCache>(&call, &snapshot).map(Step::Replayed);
                }
                Some(Claim::KeyReuse) => return Err(key_reuse(&call)),
                Some(Claim::Running {
                    attempt,
                    lease_left,
                }) => {
                    drop(tx);
                    let elapsed = started.elapsed();
                    if call.options.on_conflict == OnConflict::Error || elapsed >= call.options.wait
                    {
                        return Err(Error::InProgress {
                            op: call.op.to_string(),
                            key: call.key,
                            attempt,
                            waited: elapsed,
                        });
                    }
                    let pause = poll
                        .min(call.options.wait - elapsed)
                        .min(lease_left + Duration::from_millis(1));
                    tokio::time::sleep(pause).await;
                    poll = (poll * 2).min(MAX_POLL);
                }
                None => drop(tx),
            }
        }
    }
}
