//! The stream journal of the PostgreSQL store: fenced appends that wake the processes following
//! the stream, reads and counts of an attempt's chunks (table `<prefix>chunks`, format version
//! 6; statements in `sql.rs`).

use super::rows::{attempt_i64, corrupt};
use super::PostgresStore;
use crate::error::Error;
use crate::key::Key;
use crate::store::columns::u64_of;
use crate::store::{AttemptRef, Fence, StoredChunk};

/// The `offset_ms` column is an `int4`: offsets past 24.8 days are kept as the largest it holds
/// (still after every earlier chunk, so replay keeps their order).
fn offset_i32(offset_ms: u32) -> i32 {
    i32::try_from(offset_ms).unwrap_or(i32::MAX)
}

impl PostgresStore {
    /// Appends `chunks` as chunk numbers `first`, `first + 1`, ..., fenced on the attempt, in one
    /// statement; then, if someone waits for the key, notifies them (as a completion does).
    pub(super) async fn journal_append(
        &self,
        a: &AttemptRef<'_>,
        first: u64,
        chunks: &[StoredChunk],
    ) -> Result<Fence, Error> {
        let offsets: Vec<i32> = chunks.iter().map(|c| offset_i32(c.offset_ms)).collect();
        let bytes: Vec<&[u8]> = chunks.iter().map(|c| &c.bytes[..]).collect();
        let mut held = self.held("append_chunks", a.op, a.key).await?;
        let waiters: Option<bool> = retrying_locks!(
            sqlx::query_scalar(&self.inner.sql.append_chunks)
                .bind(&a.key.0[..])
                .bind(attempt_i64(a.attempt))
                .bind(attempt_i64(first))
                .bind(&offsets)
                .bind(&bytes)
                .fetch_optional(held.conn())
                .await
        )
        .map_err(|e| Error::store("append_chunks", a.op, a.key, e))?;
        held.done();
        match waiters {
            None => Ok(Fence::Lost),
            Some(waiters) => {
                if waiters {
                    self.notify(a.op, a.key).await;
                }
                Ok(Fence::Owned)
            }
        }
    }

    /// Up to `limit` chunks of `attempt`'s stream from chunk number `from` on, in order.
    pub(super) async fn journal_read(
        &self,
        key: &Key,
        attempt: u64,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredChunk>, Error> {
        let mut held = self.held("read_chunks", "", key).await?;
        let rows: Vec<(i32, Vec<u8>)> = sqlx::query_as(&self.inner.sql.read_chunks)
            .bind(&key.0[..])
            .bind(attempt_i64(attempt))
            .bind(attempt_i64(from))
            .bind(i64::from(limit))
            .fetch_all(held.conn())
            .await
            .map_err(|e| Error::store("read_chunks", "", key, e))?;
        held.done();
        rows.into_iter()
            .map(|(offset_ms, bytes)| {
                let offset_ms = u32::try_from(offset_ms)
                    .map_err(|_| format!("chunk offset_ms is negative ({offset_ms})"))?;
                Ok(StoredChunk { offset_ms, bytes })
            })
            .collect::<Result<_, String>>()
            .map_err(corrupt(key))
    }

    /// How many chunks `attempt`'s stream journaled.
    pub(super) async fn journal_count(&self, key: &Key, attempt: u64) -> Result<u64, Error> {
        let mut held = self.held("count_chunks", "", key).await?;
        let n: i64 = sqlx::query_scalar(&self.inner.sql.count_chunks)
            .bind(&key.0[..])
            .bind(attempt_i64(attempt))
            .fetch_one(held.conn())
            .await
            .map_err(|e| Error::store("count_chunks", "", key, e))?;
        held.done();
        u64_of(n, "chunk count").map_err(corrupt(key))
    }
}
