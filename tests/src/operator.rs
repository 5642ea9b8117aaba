//! Conformance scenarios of the operator's paths: forgetting a running key, a forget racing a
//! claim in flight, listings without snapshots, counts by operation. Run against every store by
//! `conformance_suite!`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idem_runtime::record::Status;
use idem_runtime::store::{AttemptRef, Claim, ClaimRequest, Fence, ListFilter, OpCounts, Store};
use idem_runtime::{Call, Error, Idem, Key};

use crate::backends::Backend;
use crate::conformance::{counted, TestError};
use crate::unique_op;
use crate::wrapped::Wrapped;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Claims `key` directly on the store, as a worker that then keeps running, with `lease`.
async fn hold(store: &dyn Store, op: &str, key: &Key, lease: Duration) -> u64 {
    match store
        .claim(&ClaimRequest {
            op,
            key,
            fingerprint: None,
            lease,
            ttl: Duration::from_secs(3600),
            worker: "busy-worker",
            parent: None,
        })
        .await
        .unwrap()
    {
        Claim::Acquired { attempt, .. } => attempt,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// `forget` of a key whose attempt holds a live lease is refused with `Error::Running` (by the
/// handle and by the store), deletes nothing, and is done only when forced; once the lease has
/// expired, a plain forget works.
pub async fn forget_refuses_a_running_key_unless_forced(b: &Backend) {
    let op = unique_op("forget_running");
    let idem = b.worker("operator");
    let key = Call::new(op.clone()).key(&"live").key_value();
    let attempt = hold(&*b.store, &op, &key, Duration::from_secs(600)).await;

    match idem.forget(&key).await {
        Err(e @ Error::Running { .. }) => {
            assert!(
                matches!(&e, Error::Running { op: o, key: k, attempt: a }
                         if *o == op && *k == key && *a == attempt),
                "{e:?}"
            );
            let text = e.to_string();
            assert!(text.contains(&op) && text.contains(&key.to_hex()), "{text}");
            assert!(text.contains("force") && text.contains("release"), "{text}");
        }
        other => panic!("expected Error::Running, got {other:?}"),
    }
    assert!(matches!(
        b.store.forget(&key, false).await,
        Err(Error::Running { .. })
    ));
    let record = b.store.get(&key).await.unwrap().expect("not deleted");
    assert_eq!((record.status, record.attempt), (Status::Running, attempt));
    // The live attempt still owns the key: its heartbeat is not fenced.
    let owner = AttemptRef {
        op: &op,
        key: &key,
        attempt,
    };
    assert_eq!(
        b.store
            .renew(&owner, Duration::from_secs(600))
            .await
            .unwrap(),
        Fence::Owned
    );

    assert!(idem.force_forget(&key).await.unwrap());
    assert!(b.store.get(&key).await.unwrap().is_none());
    assert!(!idem.force_forget(&key).await.unwrap(), "nothing left");

    // A running record whose lease expired (its worker died) is forgotten without force.
    let stale = Call::new(op.clone()).key(&"stale").key_value();
    hold(&*b.store, &op, &stale, ms(30)).await;
    tokio::time::sleep(ms(150)).await;
    assert!(idem.forget(&stale).await.unwrap());
    assert!(b.store.get(&stale).await.unwrap().is_none());
}

/// A claim in flight reads a completed snapshot; this handle forgets the key before the claim
/// returns. The claim's caller gets the old value (it read it first), but the handle's cache
/// must not keep it: the next call runs the body again.
pub async fn forget_racing_a_claim_does_not_recache_the_old_snapshot(b: &Backend) {
    let op = unique_op("forget_race");
    let call = || Call::new(op.clone()).key(&"k");
    let runs = AtomicUsize::new(0);
    // Recorded by another handle, so the racing handle's cache starts empty.
    assert_eq!(
        counted(&b.worker("writer"), call(), &runs, "one")
            .await
            .unwrap(),
        "one"
    );
    // Its change feed hidden, so only the handle's own forget can tell its cache.
    let paused = Arc::new(Wrapped::pausing_next_claim(b.store.clone()));
    let cached = Idem::builder(paused.clone()).worker("cached").build();
    let in_flight = tokio::spawn({
        let cached = cached.clone();
        let call = call();
        async move {
            cached
                .call(call, || async { Ok::<_, TestError>("never".to_string()) })
                .await
        }
    });
    paused.claim_decided.notified().await;
    assert!(cached.forget(&call().key_value()).await.unwrap());
    paused.claim_resume.notify_one();
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        "one",
        "read before the forget"
    );
    assert_eq!(
        counted(&cached, call(), &runs, "two").await.unwrap(),
        "two",
        "the forgotten snapshot was cached by the claim in flight"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Listings carry no snapshot (they may be megabytes each); `get` has it.
pub async fn listings_carry_no_snapshots(b: &Backend) {
    let op = unique_op("list_no_snapshot");
    let idem = b.worker("w");
    let runs = AtomicUsize::new(0);
    let big = "x".repeat(100_000);
    counted(&idem, Call::new(op.clone()).key(&1_u32), &runs, &big)
        .await
        .unwrap();
    let listed = b
        .store
        .list(&ListFilter {
            op: Some(op.clone()),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, Status::Completed);
    assert!(listed[0].snapshot.is_none(), "a listing read the snapshot");
    assert!(listed[0].snapshot_kind.is_some());
    let got = b.store.get(&listed[0].key).await.unwrap().unwrap();
    assert!(got.snapshot.is_some_and(|s| s.len() > 100_000));
}

/// `counts` counts records by operation and status, stuck ones by the store's clock.
pub async fn counts_by_operation_and_status(b: &Backend) {
    let (op_a, op_b) = (unique_op("counts_a"), unique_op("counts_b"));
    let idem = b.worker("w");
    let runs = AtomicUsize::new(0);
    for i in 0..3_u32 {
        counted(&idem, Call::new(op_a.clone()).key(&i), &runs, "v")
            .await
            .unwrap();
    }
    let _: Result<String, TestError> = idem
        .call(Call::new(op_a.clone()).key(&9_u32), || async {
            Err(TestError::Body("no".into()))
        })
        .await;
    let key = |s: &str| Call::new(op_b.clone()).key(&s).key_value();
    hold(&*b.store, &op_b, &key("live"), Duration::from_secs(600)).await;
    hold(&*b.store, &op_b, &key("stuck"), ms(20)).await;
    tokio::time::sleep(ms(150)).await;

    let a = b.store.counts(Some(&op_a)).await.unwrap();
    let mut want = OpCounts::new(&op_a);
    (want.records, want.completed, want.failed, want.attempts) = (4, 3, 1, 4);
    assert_eq!(a, vec![want]);

    let all = b.store.counts(None).await.unwrap();
    let got_b = all.iter().find(|c| c.op == op_b).expect("op_b counted");
    let mut want = OpCounts::new(&op_b);
    (want.records, want.running, want.stuck, want.attempts) = (2, 2, 1, 2);
    assert_eq!(got_b, &want);
    assert!(all.iter().any(|c| c.op == op_a));
}

/// The number of records [`purge_in_small_batches_deletes_exactly_the_expired`] writes:
/// `IDEM_PREFILL` (CI may raise it, e.g. to 20000, to cross several of purge's windows), 200
/// by default.
fn prefill_size() -> usize {
    std::env::var("IDEM_PREFILL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// A purge in batches much smaller than the table deletes exactly the expired completed records
/// and the abandoned running ones, over several batches of at most `batch` rows each, and
/// leaves live running and unexpired completed records as they were (SQL stores: the others
/// expire records by themselves).
pub async fn purge_in_small_batches_deletes_exactly_the_expired(b: &Backend) {
    let op = unique_op("purge_batches");
    let store = &*b.store;
    let idem = b.worker("w");
    let n = prefill_size();
    let key = |i: usize| Call::new(op.clone()).key(&i).key_value();
    // By i % 4: expired completed, abandoned running, unexpired completed, live running.
    for i in 0..n {
        match i % 4 {
            0 | 2 => {
                let ttl = if i % 4 == 0 {
                    ms(1)
                } else {
                    Duration::from_secs(3600)
                };
                let call = Call::new(op.clone()).key(&i).ttl(ttl);
                let runs = AtomicUsize::new(0);
                counted(&idem, call, &runs, "done").await.unwrap();
            }
            1 => {
                hold(store, &op, &key(i), ms(1)).await;
            }
            _ => {
                hold(store, &op, &key(i), Duration::from_secs(3600)).await;
            }
        }
    }
    tokio::time::sleep(ms(100)).await;

    let batch = 7;
    let (mut total, mut batches) = (0, 0);
    loop {
        let gone = store.purge_expired(batch, ms(50)).await.unwrap();
        assert!(
            gone <= u64::from(batch),
            "a batch deletes at most {batch} ({gone})"
        );
        total += gone;
        batches += 1;
        if gone < u64::from(batch) {
            break;
        }
    }
    let doomed = (0..n).filter(|i| i % 4 < 2).count() as u64;
    assert_eq!(total, doomed, "exactly the expired and abandoned records");
    assert!(
        batches > doomed / u64::from(batch),
        "{batches} batches for {doomed} records"
    );
    for i in 0..n {
        let record = store.get(&key(i)).await.unwrap();
        match (i % 4, record) {
            (0 | 1, None) => {}
            (2, Some(r)) => assert_eq!(r.status, Status::Completed, "key {i}"),
            (3, Some(r)) => assert_eq!(r.status, Status::Running, "key {i}"),
            (_, other) => panic!("key {i} (kind {}): {other:?}", i % 4),
        }
    }
    // A second purge finds nothing: the first left nothing behind.
    assert_eq!(store.purge_expired(batch, ms(50)).await.unwrap(), 0);
}
