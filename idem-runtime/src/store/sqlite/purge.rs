//! Purge of the SQLite store in bounded batches, none of which scans the records table.
//!
//! Expired records come from the `expires_at` index (a B-tree whose deleted entries are gone at
//! once, so every batch starts at the first live one). Abandoned running records (lease expired
//! more than `abandoned_after` ago) have no index (it would cost every claim and completion a
//! page write): once the expired ones are gone, one sweep per purge walks the table in primary
//! key order, [`SWEEP_ROWS`] keys per window, each window in its own short write transaction,
//! the next where the last ended. The cursor lives in the store; a second purge on the same
//! handle shares it, and deletes nothing twice (each delete re-checks its rows).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::Connection;

use super::sql::sql;
use super::SqliteStore;
use crate::error::Error;
use crate::key::Key;
use crate::store::millis;

/// Keys one abandoned-record window reads.
const SWEEP_ROWS: i64 = 10_000;

/// Where the sweep for abandoned records is: `None` while a purge deletes expired records,
/// `Some(last key read)` during the sweep (empty: from the start).
#[derive(Debug, Default, Clone)]
pub(super) struct SweepCursor(Arc<Mutex<Option<Vec<u8>>>>);

impl SweepCursor {
    fn get(&self) -> Option<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, at: Option<Vec<u8>>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }
}

impl SqliteStore {
    /// See [`crate::store::Store::purge_expired`]: up to `batch` records, in as many bounded
    /// transactions as it takes; short only when the purge is over.
    pub(super) async fn purge_batch(
        &self,
        batch: u32,
        abandoned_after: Duration,
    ) -> Result<u64, Error> {
        let fail = |e: sqlx::Error| Error::store("purge", "", &Key([0; 32]), e);
        let batch = i64::from(batch.max(1));
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        let mut gone = 0;
        if self.sweep.get().is_none() {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
            let purged: Vec<i64> = sqlx::query_scalar(&sql().purge_expired)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await
                .map_err(fail)?;
            raise_floor(&mut tx, &purged).await.map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            gone += purged.len() as i64;
            if gone >= batch {
                return Ok(gone as u64);
            }
            self.sweep.set(Some(Vec::new()));
        }
        while let Some(from) = self.sweep.get() {
            let room = batch - gone;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
            let last: Option<Vec<u8>> = sqlx::query_scalar(&sql().purge_window)
                .bind(&from)
                .bind(SWEEP_ROWS)
                .fetch_one(&mut *tx)
                .await
                .map_err(fail)?;
            let Some(last) = last else {
                // The sweep is over, and with it the purge: this call returns short.
                tx.commit().await.map_err(fail)?;
                self.sweep.set(None);
                break;
            };
            let purged: Vec<i64> = sqlx::query_scalar(&sql().purge_abandoned)
                .bind(&from)
                .bind(&last)
                .bind(millis(abandoned_after))
                .bind(room)
                .fetch_all(&mut *tx)
                .await
                .map_err(fail)?;
            raise_floor(&mut tx, &purged).await.map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            gone += purged.len() as i64;
            if gone >= batch {
                // The window may hold more: the next batch reads it again.
                break;
            }
            self.sweep.set(Some(last));
        }
        Ok(u64::try_from(gone).unwrap_or(0))
    }
}

/// Raises the attempt floor to the highest attempt deleted, in the deleting transaction, so
/// attempt numbers never go back.
async fn raise_floor(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    purged: &[i64],
) -> Result<(), sqlx::Error> {
    if let Some(highest) = purged.iter().max() {
        sqlx::query("UPDATE idem_meta SET value = max(value, ?1) WHERE name = 'attempt_floor'")
            .bind(highest)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
