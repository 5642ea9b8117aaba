//! Conformance scenarios of the stream journal at the `Store` level: fenced appends, reads in
//! order and in pages, retried appends, a new attempt's first append dropping the old stream,
//! and chunks deleted with their record (forget, purge). Run against every store by
//! `conformance_suite!`.

use std::time::Duration;

use idem_runtime::record::SnapshotKind;
use idem_runtime::store::{AttemptRef, Claim, ClaimRequest, Fence, Outcome, Store, StoredChunk};
use idem_runtime::{Call, Key};

use crate::backends::Backend;
use crate::unique_op;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Chunk `i` of a test stream: yielded `10 * i` ms in, its bytes say which one it is.
fn chunk(i: u64) -> StoredChunk {
    StoredChunk {
        offset_ms: u32::try_from(10 * i).unwrap(),
        bytes: format!("\"chunk {i}\"").into_bytes(),
    }
}

/// Chunks `from .. to` of the test stream.
fn chunks(from: u64, to: u64) -> Vec<StoredChunk> {
    (from..to).map(chunk).collect()
}

/// One key of a fresh operation.
fn fresh_key(what: &str) -> (String, Key) {
    let op = unique_op(what);
    let key = Call::new(op.clone()).key(&"k").key_value();
    (op, key)
}

/// Claims `key` and expects a new attempt; returns its number.
async fn claim(store: &dyn Store, op: &str, key: &Key, lease: Duration, ttl: Duration) -> u64 {
    let req = ClaimRequest {
        op,
        key,
        fingerprint: None,
        lease,
        ttl,
        worker: "streamer",
        parent: None,
    };
    match store.claim(&req).await.unwrap() {
        Claim::Acquired { attempt, .. } => attempt,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// Claims `key` with a 30 s lease and a 1 h ttl.
async fn claim_long(store: &dyn Store, op: &str, key: &Key) -> u64 {
    claim(
        store,
        op,
        key,
        Duration::from_secs(30),
        Duration::from_secs(3600),
    )
    .await
}

/// Records a value for `attempt`, kept for `ttl`.
async fn complete(store: &dyn Store, a: &AttemptRef<'_>, ttl: Duration) -> Fence {
    let outcome = Outcome::Snapshot {
        kind: SnapshotKind::Ok,
        bytes: b"\"done\"",
        ttl,
        cost: None,
    };
    store.complete(a, outcome).await.unwrap()
}

/// Appends chunks `first ..` of `a`'s stream and expects the fence to hold.
async fn append(store: &dyn Store, a: &AttemptRef<'_>, first: u64, batch: &[StoredChunk]) {
    let fence = store.append_chunks(a, first, batch).await.unwrap();
    assert_eq!(fence, Fence::Owned, "append of chunks {first}.. by {a:?}");
}

/// Appends land in order; reads return them in order, whole or in pages; count agrees.
pub async fn chunks_append_and_read_in_order_and_pages(b: &Backend) {
    let store = &*b.store;
    let (op, key) = fresh_key("stream_order");
    let attempt = claim_long(store, &op, &key).await;
    let a = AttemptRef {
        op: &op,
        key: &key,
        attempt,
    };
    assert_eq!(store.count_chunks(&key, attempt).await.unwrap(), 0);
    assert!(store
        .read_chunks(&key, attempt, 0, 10)
        .await
        .unwrap()
        .is_empty());

    append(store, &a, 0, &chunks(0, 3)).await;
    append(store, &a, 3, &chunks(3, 5)).await;
    append(store, &a, 5, &[]).await;
    assert_eq!(store.count_chunks(&key, attempt).await.unwrap(), 5);
    assert_eq!(
        store.read_chunks(&key, attempt, 0, 100).await.unwrap(),
        chunks(0, 5)
    );

    // Pages of two: fewer than the limit means the journal has no more yet.
    let mut pages = Vec::new();
    let mut from = 0;
    loop {
        let page = store.read_chunks(&key, attempt, from, 2).await.unwrap();
        from += page.len() as u64;
        let last = page.len() < 2;
        pages.push(page);
        if last {
            break;
        }
    }
    assert_eq!(
        pages,
        [chunks(0, 2), chunks(2, 4), chunks(4, 5)],
        "pages of two"
    );
    assert!(store
        .read_chunks(&key, attempt, 5, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .read_chunks(&key, attempt, 99, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .read_chunks(&key, attempt, 0, 0)
        .await
        .unwrap()
        .is_empty());

    // A stream the journal keeps whole: more chunks in one append than any store batches.
    let (op, key) = fresh_key("stream_long");
    let attempt = claim_long(store, &op, &key).await;
    let a = AttemptRef {
        op: &op,
        key: &key,
        attempt,
    };
    append(store, &a, 0, &chunks(0, 600)).await;
    assert_eq!(store.count_chunks(&key, attempt).await.unwrap(), 600);
    assert_eq!(
        store.read_chunks(&key, attempt, 250, 300).await.unwrap(),
        chunks(250, 550)
    );

    // Another key's stream, and another attempt of this key, are empty.
    let (_, other) = fresh_key("stream_other");
    assert_eq!(store.count_chunks(&other, attempt).await.unwrap(), 0);
    assert!(store
        .read_chunks(&key, attempt + 1, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.count_chunks(&key, attempt + 1).await.unwrap(), 0);
}

/// An append after the record completed, or by an attempt whose lease was taken over, is
/// `Fence::Lost` and writes nothing.
pub async fn chunks_append_is_fenced(b: &Backend) {
    let store = &*b.store;

    // After the completion.
    let (op, key) = fresh_key("stream_fenced_done");
    let attempt = claim_long(store, &op, &key).await;
    let a = AttemptRef {
        op: &op,
        key: &key,
        attempt,
    };
    append(store, &a, 0, &chunks(0, 2)).await;
    assert_eq!(
        complete(store, &a, Duration::from_secs(3600)).await,
        Fence::Owned
    );
    for (first, batch) in [(2, chunks(2, 4)), (0, chunks(0, 2)), (2, Vec::new())] {
        let fence = store.append_chunks(&a, first, &batch).await.unwrap();
        assert_eq!(
            fence,
            Fence::Lost,
            "append of chunks {first}.. after completion"
        );
    }
    assert_eq!(store.count_chunks(&key, attempt).await.unwrap(), 2);
    assert_eq!(
        store.read_chunks(&key, attempt, 0, 10).await.unwrap(),
        chunks(0, 2),
        "the completed stream is left as it was"
    );

    // A stale attempt: its lease ran out and a new attempt took the key over.
    let (op, key) = fresh_key("stream_fenced_stale");
    let stale = claim(store, &op, &key, ms(50), Duration::from_secs(3600)).await;
    tokio::time::sleep(ms(120)).await;
    let owner = claim_long(store, &op, &key).await;
    assert!(owner > stale, "a takeover: {owner} after {stale}");
    let old = AttemptRef {
        op: &op,
        key: &key,
        attempt: stale,
    };
    for (first, batch) in [(0, chunks(0, 3)), (0, Vec::new())] {
        let fence = store.append_chunks(&old, first, &batch).await.unwrap();
        assert_eq!(fence, Fence::Lost, "the stale attempt's append");
    }
    assert_eq!(store.count_chunks(&key, stale).await.unwrap(), 0);
    assert_eq!(store.count_chunks(&key, owner).await.unwrap(), 0);

    // A key without a record.
    let (op, key) = fresh_key("stream_fenced_none");
    let nobody = AttemptRef {
        op: &op,
        key: &key,
        attempt: 1,
    };
    let fence = store
        .append_chunks(&nobody, 0, &chunks(0, 1))
        .await
        .unwrap();
    assert_eq!(fence, Fence::Lost, "no record, no stream");
    assert_eq!(store.count_chunks(&key, 1).await.unwrap(), 0);
}

/// A retried append of chunk numbers already journaled is harmless: the journaled chunks stay
/// as they were, and the chunks past them are added. An append past a gap writes nothing.
pub async fn chunks_retried_append_is_harmless(b: &Backend) {
    let store = &*b.store;
    let (op, key) = fresh_key("stream_retry");
    let attempt = claim_long(store, &op, &key).await;
    let a = AttemptRef {
        op: &op,
        key: &key,
        attempt,
    };
    append(store, &a, 0, &chunks(0, 3)).await;
    // The same append again (its acknowledgement was lost), with other bytes for the same
    // chunk numbers: the first copies stay.
    let changed: Vec<StoredChunk> = chunks(0, 3)
        .into_iter()
        .map(|mut c| {
            c.bytes = b"\"changed\"".to_vec();
            c
        })
        .collect();
    append(store, &a, 0, &changed).await;
    append(store, &a, 0, &chunks(0, 3)).await;
    assert_eq!(store.count_chunks(&key, attempt).await.unwrap(), 3);
    // Overlapping: chunk 2 again, chunk 3 new.
    append(store, &a, 2, &[changed[2].clone(), chunk(3)]).await;
    assert_eq!(
        store.read_chunks(&key, attempt, 0, 10).await.unwrap(),
        chunks(0, 4)
    );
    // Past a gap (no chunk 9): nothing is written, so readers never skip a chunk number.
    let fence = store.append_chunks(&a, 10, &chunks(10, 12)).await.unwrap();
    assert_eq!(fence, Fence::Owned, "the attempt still owns the record");
    assert_eq!(store.count_chunks(&key, attempt).await.unwrap(), 4);
    assert_eq!(
        store.read_chunks(&key, attempt, 0, 20).await.unwrap(),
        chunks(0, 4)
    );
}

/// The first append of a new attempt drops the chunks of the key's earlier attempts (which stay
/// readable until then); reads of an attempt see only its own stream.
pub async fn chunks_new_attempt_drops_the_old_stream(b: &Backend) {
    let store = &*b.store;
    let (op, key) = fresh_key("stream_new_attempt");
    let first = claim_long(store, &op, &key).await;
    let a = AttemptRef {
        op: &op,
        key: &key,
        attempt: first,
    };
    append(store, &a, 0, &chunks(0, 3)).await;
    let failed = Outcome::Failed {
        error: "the stream broke",
        ttl: Duration::from_secs(3600),
        cost: None,
    };
    assert_eq!(store.complete(&a, failed).await.unwrap(), Fence::Owned);

    let second = claim_long(store, &op, &key).await;
    assert!(second > first, "attempt {second} after {first}");
    assert!(store
        .read_chunks(&key, second, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.read_chunks(&key, first, 0, 10).await.unwrap(),
        chunks(0, 3),
        "the old stream stays until the new one begins"
    );

    let b2 = AttemptRef {
        op: &op,
        key: &key,
        attempt: second,
    };
    let restarted: Vec<StoredChunk> = chunks(0, 2)
        .into_iter()
        .map(|mut c| {
            c.bytes = b"\"again\"".to_vec();
            c
        })
        .collect();
    append(store, &b2, 0, &restarted).await;
    assert_eq!(store.count_chunks(&key, first).await.unwrap(), 0);
    assert!(store
        .read_chunks(&key, first, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.count_chunks(&key, second).await.unwrap(), 2);
    assert_eq!(
        store.read_chunks(&key, second, 0, 10).await.unwrap(),
        restarted,
        "the new attempt's chunks, not the old ones under the same numbers"
    );
}

/// `forget` deletes the key's chunks with its record: a new claim's attempt starts an empty
/// journal, and the old attempt's stream is gone.
pub async fn chunks_forget_deletes_the_stream(b: &Backend) {
    let store = &*b.store;
    let (op, key) = fresh_key("stream_forget");
    let first = claim_long(store, &op, &key).await;
    let a = AttemptRef {
        op: &op,
        key: &key,
        attempt: first,
    };
    append(store, &a, 0, &chunks(0, 4)).await;
    assert_eq!(
        complete(store, &a, Duration::from_secs(3600)).await,
        Fence::Owned
    );
    assert!(store.forget(&key, false).await.unwrap());
    assert_eq!(store.count_chunks(&key, first).await.unwrap(), 0);

    let second = claim_long(store, &op, &key).await;
    assert!(second > first, "attempt {second} after {first}");
    assert_eq!(store.count_chunks(&key, first).await.unwrap(), 0);
    assert_eq!(store.count_chunks(&key, second).await.unwrap(), 0);
    assert!(store
        .read_chunks(&key, first, 0, 10)
        .await
        .unwrap()
        .is_empty());

    // A forced forget of a running attempt deletes its stream too.
    let b2 = AttemptRef {
        op: &op,
        key: &key,
        attempt: second,
    };
    append(store, &b2, 0, &chunks(0, 2)).await;
    assert!(store.forget(&key, true).await.unwrap());
    assert_eq!(store.count_chunks(&key, second).await.unwrap(), 0);
    let fence = store.append_chunks(&b2, 2, &chunks(2, 3)).await.unwrap();
    assert_eq!(fence, Fence::Lost, "a forgotten attempt appends nothing");
    assert_eq!(store.count_chunks(&key, second).await.unwrap(), 0);
}

/// Purge of an expired record deletes its chunks; an unexpired record keeps its stream.
pub async fn chunks_purge_deletes_expired_streams(b: &Backend) {
    let store = &*b.store;
    let (op, key) = fresh_key("stream_purge");
    let attempt = claim(store, &op, &key, Duration::from_secs(30), ms(50)).await;
    let a = AttemptRef {
        op: &op,
        key: &key,
        attempt,
    };
    append(store, &a, 0, &chunks(0, 3)).await;
    assert_eq!(complete(store, &a, ms(50)).await, Fence::Owned);

    let kept_key = Call::new(op.clone()).key(&"kept").key_value();
    let kept = claim_long(store, &op, &kept_key).await;
    let k = AttemptRef {
        op: &op,
        key: &kept_key,
        attempt: kept,
    };
    append(store, &k, 0, &chunks(0, 2)).await;
    assert_eq!(
        complete(store, &k, Duration::from_secs(3600)).await,
        Fence::Owned
    );

    tokio::time::sleep(ms(150)).await;
    while store
        .purge_expired(100, Duration::from_secs(3600))
        .await
        .unwrap()
        == 100
    {}
    assert!(
        store.get(&key).await.unwrap().is_none(),
        "the record expired"
    );
    assert_eq!(store.count_chunks(&key, attempt).await.unwrap(), 0);
    assert!(store
        .read_chunks(&key, attempt, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.read_chunks(&kept_key, kept, 0, 10).await.unwrap(),
        chunks(0, 2),
        "an unexpired record keeps its stream"
    );
}
