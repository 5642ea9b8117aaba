//! The stream journal of the SQLite store: fenced appends, reads and counts of an attempt's
//! chunks (table `idem_chunks`, format version 2; statements in `sql.rs`).

use sqlx::sqlite::SqlitePool;
use sqlx::Row;

use super::sql::{self, APPEND_BATCH, COUNT_CHUNKS, READ_CHUNKS};
use crate::error::Error;
use crate::key::Key;
use crate::store::columns::u64_of;
use crate::store::{AttemptRef, Fence, StoredChunk};

/// SQL integers are signed; no attempt or chunk number reaches `i64::MAX`.
fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Appends `chunks` as chunk numbers `first`, `first + 1`, ..., fenced on the attempt. Batches
/// of [`APPEND_BATCH`] are one statement each; a lost fence stops at the batch that finds it.
pub(super) async fn append(
    pool: &SqlitePool,
    a: &AttemptRef<'_>,
    first: u64,
    chunks: &[StoredChunk],
) -> Result<Fence, Error> {
    let batches: Vec<&[StoredChunk]> = if chunks.is_empty() {
        // Still one statement: the fence answers, and a first append drops older attempts.
        vec![chunks]
    } else {
        chunks.chunks(APPEND_BATCH).collect()
    };
    let mut seq = first;
    for batch in batches {
        if append_batch(pool, a, seq, batch).await? == Fence::Lost {
            return Ok(Fence::Lost);
        }
        seq += batch.len() as u64;
    }
    Ok(Fence::Owned)
}

async fn append_batch(
    pool: &SqlitePool,
    a: &AttemptRef<'_>,
    first: u64,
    chunks: &[StoredChunk],
) -> Result<Fence, Error> {
    let mut query = sqlx::query(sql::append_chunks(chunks.len(), first == 0))
        .bind(&a.key.0[..])
        .bind(i64_of(a.attempt))
        .bind(i64_of(first));
    for (seq, chunk) in (first..).zip(chunks) {
        query = query
            .bind(i64_of(seq))
            .bind(i64::from(chunk.offset_ms))
            .bind(&chunk.bytes[..]);
    }
    let fail = |e: sqlx::Error| Error::store("append_chunks", a.op, a.key, e);
    let row = query.fetch_one(pool).await.map_err(fail)?;
    let added: i64 = row.try_get("added").map_err(fail)?;
    let owned: bool = row.try_get("owned").map_err(fail)?;
    // Chunks written: the fence held when they were. None written: a retried append (the
    // attempt still runs) or a lost fence.
    Ok(if added > 0 || owned {
        Fence::Owned
    } else {
        Fence::Lost
    })
}

/// Up to `limit` chunks of `attempt`'s stream from chunk number `from` on, in order.
pub(super) async fn read(
    pool: &SqlitePool,
    key: &Key,
    attempt: u64,
    from: u64,
    limit: u32,
) -> Result<Vec<StoredChunk>, Error> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(READ_CHUNKS)
        .bind(&key.0[..])
        .bind(i64_of(attempt))
        .bind(i64_of(from))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(|e| Error::store("read_chunks", "", key, e))?;
    rows.into_iter()
        .map(|(offset_ms, bytes)| {
            let offset_ms = u32::try_from(offset_ms)
                .map_err(|_| format!("chunk offset_ms is out of range ({offset_ms})"))?;
            Ok(StoredChunk { offset_ms, bytes })
        })
        .collect::<Result<_, String>>()
        .map_err(|reason| Error::Corrupt {
            op: String::new(),
            key: *key,
            reason,
        })
}

/// How many chunks `attempt`'s stream journaled.
pub(super) async fn count(pool: &SqlitePool, key: &Key, attempt: u64) -> Result<u64, Error> {
    let n: i64 = sqlx::query_scalar(COUNT_CHUNKS)
        .bind(&key.0[..])
        .bind(i64_of(attempt))
        .fetch_one(pool)
        .await
        .map_err(|e| Error::store("count_chunks", "", key, e))?;
    u64_of(n, "chunk count").map_err(|reason| Error::Corrupt {
        op: String::new(),
        key: *key,
        reason,
    })
}
