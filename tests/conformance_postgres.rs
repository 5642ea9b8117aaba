//! The store conformance suite on the PostgreSQL store, plus PostgreSQL-only behaviour:
//! configuration that could inject SQL is refused, many workers migrating at once, LISTEN/NOTIFY
//! wake-ups (of waiters and of stream followers), corrupt rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

idem_tests::conformance_suite!(idem_tests::backends::postgres());

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_runtime::record::SnapshotKind;
use idem_runtime::store::postgres::{PostgresStore, FORMAT_VERSION};
use idem_runtime::store::{AttemptRef, Claim, ClaimRequest, Fence, Outcome, Store, StoredChunk};
use idem_runtime::{Call, Error, Idem};
use idem_tests::backends::{fresh_postgres_schema, postgres_store, postgres_url};
use idem_tests::conformance::{count_call, TestError};
use sqlx::Connection;

/// A claim of `key` by `worker`: no fingerprint, a 30 s lease, a 1 h ttl.
fn plain_request<'a>(op: &'a str, key: &'a idem_runtime::Key, worker: &'a str) -> ClaimRequest<'a> {
    ClaimRequest {
        op,
        key,
        fingerprint: None,
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(3600),
        worker,
        parent: None,
    }
}

/// Schema names and table prefixes are validated identifiers: anything that could change a
/// statement is refused as configuration, before any connection, through the builder or the URL.
#[tokio::test]
async fn malicious_names_are_rejected() {
    let schema = fresh_postgres_schema();
    let Some(store) = postgres_store(&schema, |b| b).await else {
        return;
    };
    let canary = format!("\"{schema}\".pwned");
    let evil_prefix = format!("x\"; CREATE TABLE {canary} (); --");
    let evil_schema = format!("{schema}\"; CREATE TABLE {canary} (); --");
    let url = postgres_url();
    for (schema, prefix) in [
        (schema.as_str(), evil_prefix.as_str()),
        (evil_schema.as_str(), "idem_"),
        ("Public", "idem_"),
        ("public", "idem."),
        ("public", "idem_ "),
    ] {
        let r = PostgresStore::builder(&url)
            .schema(schema)
            .table_prefix(prefix)
            .open()
            .await;
        assert!(
            matches!(r, Err(Error::Config(_))),
            "{schema:?} / {prefix:?}: {r:?}"
        );
    }
    let r = PostgresStore::open(&format!("{url}?idem_table_prefix=x%22;drop")).await;
    assert!(matches!(r, Err(Error::Config(_))), "{r:?}");
    let r = PostgresStore::open(&format!("{url}?idem_bogus=1")).await;
    assert!(matches!(r, Err(Error::Open { .. })), "{r:?}");
    let pwned: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&canary)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(pwned, None, "nothing was injected");
}

/// Many workers starting at once on a new schema: all open, the migration applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_workers_migrating_at_once() {
    let Some(probe) = postgres_store(&fresh_postgres_schema(), |b| b.max_connections(1)).await
    else {
        return;
    };
    let schema = fresh_postgres_schema();
    let opens: Vec<_> = (0..16)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move {
                PostgresStore::builder(&postgres_url())
                    .schema(&schema)
                    .table_prefix("many_")
                    .max_connections(1)
                    .application_name("idem-test")
                    .open()
                    .await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().unwrap());
    }
    let versions: Vec<i32> =
        sqlx::query_scalar(&format!("SELECT version FROM \"{schema}\".many_schema"))
            .fetch_all(probe.pool())
            .await
            .unwrap();
    assert_eq!(versions, (1..=FORMAT_VERSION).collect::<Vec<_>>());
    // And they all work on the same tables.
    let runs = Arc::new(AtomicUsize::new(0));
    let op = idem_tests::unique_op("migrated");
    for store in stores {
        let idem = Idem::builder(Arc::new(store)).cache_capacity(0).build();
        let runs = runs.clone();
        let v: String = idem
            .call(Call::new(op.clone()).key(&1_u8), || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>("once".into())
            })
            .await
            .unwrap();
        assert_eq!(v, "once");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(probe.pool())
        .await
        .unwrap();
}

/// A waiter (told `running` by its claim) is woken by NOTIFY as soon as the owner completes, not
/// at the end of its wait; with
/// notifications off it sleeps its whole wait (polling).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_wakes_waiters_at_once() {
    let schema = fresh_postgres_schema();
    let Some(store) = postgres_store(&schema, |b| b).await else {
        return;
    };
    let store = Arc::new(store);
    let op = idem_tests::unique_op("notify");
    let key = Call::new(op.clone()).key(&"k").key_value();
    let req = plain_request(&op, &key, "owner");
    let Claim::Acquired { attempt, .. } = store.claim(&req).await.unwrap() else {
        panic!("fresh key")
    };
    // Start the listener and wait until it is connected.
    let begun = Instant::now();
    while !store.listening() {
        store.wait_for_change(&key, Duration::from_millis(20)).await;
        assert!(
            begun.elapsed() < Duration::from_secs(10),
            "the listener connects"
        );
    }
    // As the runtime does: the waiter is told `running` (which asks the completion to notify)...
    let dup = ClaimRequest {
        worker: "waiter",
        parent: None,
        ..req
    };
    assert!(matches!(
        store.claim(&dup).await.unwrap(),
        Claim::Running { attempt: 1, .. }
    ));
    // ...then waits.
    let waiter = {
        let (store, key) = (store.clone(), key);
        tokio::spawn(async move {
            let begun = Instant::now();
            store.wait_for_change(&key, Duration::from_secs(20)).await;
            begun.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = AttemptRef {
        op: &op,
        key: &key,
        attempt,
    };
    let outcome = Outcome::Snapshot {
        kind: SnapshotKind::Ok,
        bytes: b"\"v\"",
        ttl: Duration::from_secs(60),
        cost: None,
    };
    assert_eq!(store.complete(&a, outcome).await.unwrap(), Fence::Owned);
    let waited = waiter.await.unwrap();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "woken at once: {waited:?}"
    );

    let polling = postgres_store(&schema, |b| b.notifications(false))
        .await
        .unwrap();
    let begun = Instant::now();
    polling
        .wait_for_change(&key, Duration::from_millis(300))
        .await;
    assert!(begun.elapsed() >= Duration::from_millis(300));
    assert!(!polling.listening());
}

/// A process following a stream (told `running`, so the record is flagged) is woken by the
/// NOTIFY of each append in another process, as by a completion's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appended_chunks_wake_followers_at_once() {
    let schema = fresh_postgres_schema();
    let Some(owner) = postgres_store(&schema, |b| b).await else {
        return;
    };
    let follower = Arc::new(postgres_store(&schema, |b| b).await.unwrap());
    let op = idem_tests::unique_op("stream_notify");
    let key = Call::new(op.clone()).key(&"k").key_value();
    let req = plain_request(&op, &key, "owner");
    let Claim::Acquired { attempt, .. } = owner.claim(&req).await.unwrap() else {
        panic!("fresh key")
    };
    let begun = Instant::now();
    while !follower.listening() {
        follower
            .wait_for_change(&key, Duration::from_millis(20))
            .await;
        assert!(
            begun.elapsed() < Duration::from_secs(10),
            "the listener connects"
        );
    }
    let dup = ClaimRequest {
        worker: "follower",
        parent: None,
        ..req
    };
    assert!(matches!(
        follower.claim(&dup).await.unwrap(),
        Claim::Running { .. }
    ));
    let a = AttemptRef {
        op: &op,
        key: &key,
        attempt,
    };
    for first in 0..2u64 {
        let waiter = {
            let (follower, key) = (follower.clone(), key);
            tokio::spawn(async move {
                let begun = Instant::now();
                follower
                    .wait_for_change(&key, Duration::from_secs(20))
                    .await;
                begun.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let chunk = StoredChunk {
            offset_ms: 0,
            bytes: b"1".to_vec(),
        };
        assert_eq!(
            owner.append_chunks(&a, first, &[chunk]).await.unwrap(),
            Fence::Owned
        );
        let waited = waiter.await.unwrap();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
            "append {first}: woken at once: {waited:?}"
        );
    }
    assert_eq!(follower.count_chunks(&key, attempt).await.unwrap(), 2);
}

/// Appends racing a forced forget of their record never leave chunks behind it: the append
/// holds the record's key-share lock, so the delete (and its trigger) comes after it, or the
/// append finds no record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_racing_a_forget_leave_no_chunks() {
    let schema = fresh_postgres_schema();
    let Some(store) = postgres_store(&schema, |b| b).await else {
        return;
    };
    let store = Arc::new(store);
    let op = idem_tests::unique_op("stream_forget_race");
    for round in 0..20u32 {
        let key = Call::new(op.clone()).key(&round).key_value();
        let Claim::Acquired { attempt, .. } =
            store.claim(&plain_request(&op, &key, "w")).await.unwrap()
        else {
            panic!("fresh key")
        };
        let appender = {
            let (store, op) = (store.clone(), op.clone());
            tokio::spawn(async move {
                let a = AttemptRef {
                    op: &op,
                    key: &key,
                    attempt,
                };
                for first in 0.. {
                    let chunk = StoredChunk {
                        offset_ms: 0,
                        bytes: vec![b'0'; 64],
                    };
                    if store.append_chunks(&a, first, &[chunk]).await.unwrap() == Fence::Lost {
                        return first;
                    }
                }
                unreachable!("the forget ends the stream")
            })
        };
        tokio::time::sleep(Duration::from_millis(u64::from(round % 5))).await;
        assert!(store.forget(&key, true).await.unwrap());
        appender.await.unwrap();
        let left: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{schema}\".idem_chunks WHERE key = $1"
        ))
        .bind(&key.0[..])
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(left, 0, "round {round}: chunks outlived their record");
    }
}

/// A corrupt snapshot row: a typed error naming op and key; no panic, no re-run.
#[tokio::test]
async fn corrupt_snapshot_row_is_a_typed_error() {
    let schema = fresh_postgres_schema();
    let Some(store) = postgres_store(&schema, |b| b).await else {
        return;
    };
    let (pool, table) = (store.pool().clone(), store.records_table().to_owned());
    let idem = Idem::builder(Arc::new(store)).cache_capacity(0).build();
    let op = idem_tests::unique_op("corrupt");
    let runs = AtomicUsize::new(0);
    count_call(&idem, &op, &runs).await.unwrap();
    let set = |assignments: &'static str| {
        let (pool, table, op) = (pool.clone(), table.clone(), op.clone());
        async move {
            sqlx::query(&format!("UPDATE {table} SET {assignments} WHERE op = $1"))
                .bind(&op)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    set("snapshot = '\\x00ff13'").await;
    match count_call(&idem, &op, &runs).await {
        Err(TestError::Idem(e @ Error::SnapshotDecode { .. })) => {
            assert!(e.to_string().contains(&op), "{e}")
        }
        other => panic!("expected SnapshotDecode, got {other:?}"),
    }
    set("snapshot = NULL").await;
    let r = count_call(&idem, &op, &runs).await;
    assert!(
        matches!(r, Err(TestError::Idem(Error::Corrupt { .. }))),
        "{r:?}"
    );
    // A status no version of idem writes (the table has no CHECK constraints since format 2):
    // corrupt, never replaced and run again.
    set("status = 'done', snapshot = convert_to('\"ran\"', 'UTF8')").await;
    let r = count_call(&idem, &op, &runs).await;
    assert!(
        matches!(&r, Err(TestError::Idem(Error::Corrupt { reason, .. })) if reason.contains("done")),
        "{r:?}"
    );
    // An operator pinning a record forever: it replays (no date overflow, no panic).
    set("status = 'completed', expires_at = 'infinity'").await;
    assert_eq!(count_call(&idem, &op, &runs).await.unwrap(), "ran");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// An unreachable server is a typed open error, naming the URL without its password.
#[tokio::test]
async fn unreachable_server_is_an_open_error() {
    let r = PostgresStore::builder("postgres://u:secret@127.0.0.1:1/none")
        .acquire_timeout(Duration::from_secs(2))
        .open()
        .await;
    match r {
        Err(e @ Error::Open { .. }) => assert!(!e.to_string().contains("secret"), "{e}"),
        other => panic!("expected an open error, got {other:?}"),
    }
}

/// The cache requirement: a `forget` on one worker reaches the other workers' snapshot
/// caches through LISTEN/NOTIFY, long before their staleness bound (here one hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forget_on_one_worker_reaches_other_workers_caches() {
    let schema = fresh_postgres_schema();
    let Some(a) = postgres_store(&schema, |b| b).await else {
        return;
    };
    let b = Arc::new(postgres_store(&schema, |b| b).await.unwrap());
    let hour = Duration::from_secs(3600);
    let worker_a = Idem::builder(Arc::new(a)).cache_staleness(hour).build();
    let worker_b = Idem::builder(b.clone()).cache_staleness(hour).build();
    // Building a cached handle starts the store's listener.
    let begun = Instant::now();
    while !b.listening() {
        assert!(begun.elapsed() < Duration::from_secs(10), "B listens");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let op = idem_tests::unique_op("cache_forget");
    let runs = AtomicUsize::new(0);
    assert_eq!(count_call(&worker_a, &op, &runs).await.unwrap(), "ran");
    // B replays from the store once, then from its cache: the store is not asked again.
    assert_eq!(count_call(&worker_b, &op, &runs).await.unwrap(), "ran");
    let key = Call::new(op.clone()).key(&"k").key_value();
    sqlx::query(&format!(
        "UPDATE {} SET snapshot = convert_to('\"changed in the store\"', 'UTF8') WHERE key = $1",
        b.records_table()
    ))
    .bind(&key.0[..])
    .execute(b.pool())
    .await
    .unwrap();
    assert_eq!(
        count_call(&worker_b, &op, &runs).await.unwrap(),
        "ran",
        "B's second replay comes from its cache"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A forgets; B hears of it and runs the key again, well within its one-hour bound.
    assert!(worker_a.forget(&key).await.unwrap());
    let begun = Instant::now();
    loop {
        count_call(&worker_b, &op, &runs).await.unwrap();
        if runs.load(Ordering::SeqCst) == 2 {
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(5),
            "B's cache still replays a forgotten key after {:?}",
            begun.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let heard = begun.elapsed();
    assert!(heard < Duration::from_secs(2), "heard after {heard:?}");
}

/// The store sends one of two claim statements first, by a per-operation guess (an insert for
/// keys without a record, a read that calls the acquire function otherwise). Whichever it
/// sends, the decisions are the same: each round drives the guess a different way first, then
/// reaches every outcome (new key, wait, replay, key reuse, run again after a failure, after a
/// forget, takeover of an expired lease).
#[tokio::test]
async fn both_claim_statements_decide_alike() {
    let Some(store) = postgres_store(&fresh_postgres_schema(), |b| b).await else {
        return;
    };
    let op = idem_tests::unique_op("two_statements");
    let req = |key: &'static str, lease_ms: u64| {
        let key = Call::new(op.clone()).key(&key).key_value();
        (key, Duration::from_millis(lease_ms))
    };
    let claim = |key: idem_runtime::Key, lease: Duration| {
        let (store, op) = (&store, op.clone());
        async move {
            let req = ClaimRequest {
                op: &op,
                key: &key,
                fingerprint: None,
                lease,
                ttl: Duration::from_secs(3600),
                worker: "w",
                parent: None,
            };
            store.claim(&req).await.unwrap()
        }
    };
    let complete = |key: idem_runtime::Key, attempt: u64| {
        let (store, op) = (&store, op.clone());
        async move {
            let a = AttemptRef {
                op: &op,
                key: &key,
                attempt,
            };
            let outcome = Outcome::Snapshot {
                kind: SnapshotKind::Ok,
                bytes: b"1",
                ttl: Duration::from_secs(3600),
                cost: None,
            };
            store.complete(&a, outcome).await.unwrap()
        }
    };
    // Attempt numbers start above the store-wide floor, which round 1's forget raises to 1.
    for (round, floor) in [("guessing new keys", 0), ("guessing replays", 1)] {
        let (k, lease) = req(
            if round == "guessing new keys" {
                "a"
            } else {
                "b"
            },
            30_000,
        );
        let (dead, short) = req(
            if round == "guessing new keys" {
                "c"
            } else {
                "d"
            },
            1,
        );
        if round == "guessing replays" {
            // Teach the store that this operation replays.
            let (done, _) = req("a", 30_000);
            for _ in 0..4 {
                assert!(matches!(claim(done, lease).await, Claim::Completed(_)));
            }
        }
        // A new key: the first attempt above the floor.
        assert_eq!(
            claim(k, lease).await,
            Claim::Acquired {
                attempt: floor + 1,
                took_over: None
            },
            "{round}"
        );
        // A running key: wait.
        assert!(
            matches!(claim(k, lease).await, Claim::Running { attempt, .. } if attempt == floor + 1),
            "{round}"
        );
        assert_eq!(complete(k, floor + 1).await, Fence::Owned, "{round}");
        // A completed key: replay.
        assert!(
            matches!(claim(k, lease).await, Claim::Completed(s) if s.attempt == floor + 1 && s.bytes == b"1"),
            "{round}"
        );
        // A different payload under a completed key: refused.
        let other = idem_runtime::Fingerprint([9; 32]);
        let reuse = ClaimRequest {
            op: &op,
            key: &k,
            fingerprint: Some(&other),
            lease,
            ttl: Duration::from_secs(3600),
            worker: "w",
            parent: None,
        };
        sqlx::query(&format!(
            "UPDATE {} SET fingerprint = $2 WHERE key = $1",
            store.records_table()
        ))
        .bind(&k.0[..])
        .bind(&[1_u8; 32][..])
        .execute(store.pool())
        .await
        .unwrap();
        assert_eq!(
            store.claim(&reuse).await.unwrap(),
            Claim::KeyReuse,
            "{round}"
        );
        // A forgotten key starts above the floor, which the forget raised.
        assert!(store.forget(&k, false).await.unwrap());
        assert_eq!(
            claim(k, lease).await,
            Claim::Acquired {
                attempt: floor + 2,
                took_over: None
            },
            "{round}"
        );
        // An expired lease: taken over.
        let Claim::Acquired { attempt, .. } = claim(dead, short).await else {
            panic!("{round}: a new key")
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            claim(dead, lease).await,
            Claim::Acquired {
                attempt: attempt + 1,
                took_over: Some(attempt)
            },
            "{round}"
        );
        assert_eq!(complete(dead, attempt).await, Fence::Lost, "{round}");
        // A failed attempt: the next claim runs again.
        let failed = store
            .complete(
                &AttemptRef {
                    op: &op,
                    key: &dead,
                    attempt: attempt + 1,
                },
                Outcome::Failed {
                    error: "boom",
                    ttl: Duration::from_secs(3600),
                    cost: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(failed, Fence::Owned, "{round}");
        assert_eq!(
            claim(dead, lease).await,
            Claim::Acquired {
                attempt: attempt + 2,
                took_over: None
            },
            "{round}"
        );
        assert_eq!(complete(k, floor + 2).await, Fence::Owned, "{round}");
    }
}

/// The claim of a new key can wait on a forget or purge that is deleting the key's old row;
/// that transaction raises the attempt floor just before it commits, after the claim has read
/// it. The claim still takes an attempt above the deleted one (its insert re-reads the floor
/// and renumbers the row it inserted, in the same statement), so a late completion of the old
/// attempt can never match the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_claim_waiting_on_a_delete_takes_an_attempt_above_it() {
    claim_racing_a_delete(|store, op, _name, key| async move {
        let req = plain_request(&op, &key, "other");
        loop {
            match store.claim(&req).await.unwrap() {
                Claim::Acquired { attempt, .. } => return attempt,
                // Its wait on the deleter's row timed out (the store's lock timeout): an
                // uncommitted attempt, as a caller would be told; it looks again.
                Claim::Running { attempt: 0, .. } => {}
                other => panic!("a key without a record is acquired: {other:?}"),
            }
        }
    })
    .await;
}

/// The same race inside a transactional step: the renumbering happens in the step's own
/// transaction, which goes on (nothing failed in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_waiting_on_a_delete_takes_an_attempt_above_it() {
    use idem_runtime::store::postgres::Step;
    claim_racing_a_delete(|store, op, name, _key| async move {
        match store
            .begin_step::<String>(Call::new(op).key(&name), "other")
            .await
            .unwrap()
        {
            Step::Claimed(tx) => tx.attempt(),
            Step::Replayed(v) => panic!("a key without a record is claimed: {v}"),
        }
    })
    .await;
}

/// A record of attempt 5 is deleted by a transaction that raises the floor only after a claim
/// (`claim(store, op, key name, key)`, run on a second store, whose guess is "new key") waits
/// on it: that claim must come out with attempt 6.
async fn claim_racing_a_delete<F, Fut>(claim: F)
where
    F: FnOnce(PostgresStore, String, &'static str, idem_runtime::Key) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let schema = fresh_postgres_schema();
    let Some(store) = postgres_store(&schema, |b| b).await else {
        return;
    };
    let op = idem_tests::unique_op("floor_race");
    let name = "k";
    let key = Call::new(op.clone()).key(&name).key_value();
    let records = store.records_table().to_owned();
    sqlx::query(&format!(
        "INSERT INTO {records} (key, op, status, attempt, snapshot, snapshot_kind, worker,
             created_at, updated_at, expires_at, attempt_started_at, attempt_outcome)
         VALUES ($1, $2, 'completed', 5, convert_to('\"old\"', 'UTF8'), 'ok', 'w',
                 now(), now(), now() + interval '1 hour', now(), 'completed')"
    ))
    .bind(&key.0[..])
    .bind(&op)
    .execute(store.pool())
    .await
    .unwrap();

    // A deleter that has removed the row but not yet raised the floor.
    let mut deleter = store.pool().begin().await.unwrap();
    sqlx::query(&format!("DELETE FROM {records} WHERE key = $1"))
        .bind(&key.0[..])
        .execute(&mut *deleter)
        .await
        .unwrap();
    // Another worker (a new store guesses "new key" first) claims the key: its insert waits
    // for the deleter.
    let other = postgres_store(&schema, |b| b).await.unwrap();
    let claimer = tokio::spawn(claim(other, op.clone(), name, key));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO ' || $1 || '%'",
        )
        .bind(&records)
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the claim never waited for the deleter"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Now the floor, as forget and purge raise it, and the commit.
    sqlx::query(&format!(
        "UPDATE \"{schema}\".idem_meta SET value = greatest(value, 5)
         WHERE name = 'attempt_floor'"
    ))
    .execute(&mut *deleter)
    .await
    .unwrap();
    deleter.commit().await.unwrap();

    let attempt = claimer.await.unwrap();
    assert_eq!(attempt, 6, "the new attempt is above the deleted attempt 5");
    // The attempt the insert first took never existed: nothing logs it as replaced.
    let logged: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\".idem_attempts WHERE key = $1"
    ))
    .bind(&key.0[..])
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(logged, 0, "no attempts-log line for the renumbered attempt");
}

/// A database that version 1 of the format created (a frozen copy of its DDL) is upgraded in
/// place when this build opens it: its records replay, its attempt floor holds, and the CHECK
/// constraints version 2 drops are gone.
#[tokio::test]
async fn upgrades_a_version_1_database_in_place() {
    let Some(probe) = postgres_store(&fresh_postgres_schema(), |b| b).await else {
        return;
    };
    let schema = fresh_postgres_schema();
    let v1 = include_str!("fixtures/postgres_format_v1.sql").replace("{schema}", &schema);
    let mut conn = probe.pool().acquire().await.unwrap();
    sqlx::Executor::execute(&mut *conn, format!("CREATE SCHEMA \"{schema}\"").as_str())
        .await
        .unwrap();
    sqlx::Executor::execute(&mut *conn, v1.as_str())
        .await
        .unwrap();
    let op = idem_tests::unique_op("upgrade");
    let key = Call::new(op.clone()).key(&"k").key_value();
    // A completed record and a raised floor, as version 1 wrote them.
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".idem_records (key, op, status, attempt, snapshot, snapshot_kind,
             worker, created_at, updated_at, expires_at, attempt_started_at, attempt_outcome)
         VALUES ($1, $2, 'completed', 3, convert_to('\"from v1\"', 'UTF8'), 'ok', 'old',
                 now(), now(), now() + interval '1 hour', now(), 'completed')"
    ))
    .bind(&key.0[..])
    .bind(&op)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(&format!(
        "UPDATE \"{schema}\".idem_meta SET value = 7 WHERE name = 'attempt_floor'"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();

    let store = postgres_store(&schema, |b| b).await.unwrap();
    let versions: Vec<i32> = sqlx::query_scalar(&format!(
        "SELECT version FROM \"{schema}\".idem_schema ORDER BY version"
    ))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(versions, (1..=FORMAT_VERSION).collect::<Vec<_>>());
    assert_eq!(
        check_constraints(&store).await,
        0,
        "version 2 drops the records table's CHECK constraints"
    );

    let idem = Idem::builder(Arc::new(store)).cache_capacity(0).build();
    let runs = AtomicUsize::new(0);
    assert_eq!(
        count_call(&idem, &op, &runs).await.unwrap(),
        "from v1",
        "a version-1 record replays"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let fresh: i64 = {
        let v: String = idem
            .call(Call::new(op.clone()).key(&"new"), || async {
                Ok::<_, Error>(idem_runtime::current().map_or(0, |c| c.attempt).to_string())
            })
            .await
            .unwrap();
        v.parse().unwrap()
    };
    assert_eq!(fresh, 8, "a new key starts above version 1's attempt floor");
    // A floor raised as an older build raises it (the meta row only) reaches the claim of a
    // new key, which reads the floor's mirror.
    sqlx::query(&format!(
        "UPDATE \"{schema}\".idem_meta SET value = 20 WHERE name = 'attempt_floor'"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    let newer = Call::new(op.clone()).key(&"newer").key_value();
    let claim = idem
        .store()
        .claim(&plain_request(&op, &newer, "w"))
        .await
        .unwrap();
    assert!(
        matches!(claim, Claim::Acquired { attempt: 21, .. }),
        "{claim:?}"
    );
    // Streams work on the upgraded database, and go with their record.
    let a = AttemptRef {
        op: &op,
        key: &newer,
        attempt: 21,
    };
    let chunks = [StoredChunk {
        offset_ms: 7,
        bytes: b"\"c\"".to_vec(),
    }];
    let store = idem.store();
    assert_eq!(
        store.append_chunks(&a, 0, &chunks).await.unwrap(),
        Fence::Owned
    );
    assert_eq!(store.read_chunks(&newer, 21, 0, 10).await.unwrap(), chunks);
    assert!(store.forget(&newer, true).await.unwrap());
    assert_eq!(store.count_chunks(&newer, 21).await.unwrap(), 0);
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// With the longest table prefix (whose generated constraint names PostgreSQL shortens), the
/// records table still ends up without CHECK constraints, and the store works.
#[tokio::test]
async fn longest_prefix_migrates_fully() {
    let prefix = "p".repeat(40);
    let Some(store) = postgres_store(&fresh_postgres_schema(), |b| b.table_prefix(&prefix)).await
    else {
        return;
    };
    assert_eq!(check_constraints(&store).await, 0);
    let idem = Idem::builder(Arc::new(store)).cache_capacity(0).build();
    let runs = AtomicUsize::new(0);
    let op = idem_tests::unique_op("long_prefix");
    for _ in 0..2 {
        assert_eq!(count_call(&idem, &op, &runs).await.unwrap(), "ran");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// How many CHECK constraints the store's records table has.
async fn check_constraints(store: &PostgresStore) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'c'",
    )
    .bind(store.records_table())
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// The store keeps connections checked out between hot statements (skipping sqlx's release
/// round trip). A claim cancelled mid-statement does not hand its connection, with the
/// statement's answer still unread, to the next claim; kept connections go back to the pool
/// when idle, so the pool's other users are not starved; and `close` does not wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_connections_stay_clean_and_go_back_to_the_pool() {
    let schema = fresh_postgres_schema();
    let Some(store) = postgres_store(&schema, |b| b.max_connections(2)).await else {
        return;
    };
    let op = idem_tests::unique_op("kept");
    let claim = |name: &'static str| {
        let (store, op) = (&store, op.clone());
        async move {
            let key = Call::new(op.clone()).key(&name).key_value();
            let req = plain_request(&op, &key, "w");
            store.claim(&req).await
        }
    };
    let complete = |name: &'static str, attempt: u64| {
        let (store, op) = (&store, op.clone());
        async move {
            let key = Call::new(op.clone()).key(&name).key_value();
            let a = AttemptRef {
                op: &op,
                key: &key,
                attempt,
            };
            let outcome = Outcome::Snapshot {
                kind: SnapshotKind::Ok,
                bytes: name.as_bytes(),
                ttl: Duration::from_secs(3600),
                cost: None,
            };
            store.complete(&a, outcome).await.unwrap()
        }
    };

    // A claim stuck behind a table lock, cancelled by its caller's timeout.
    let records = store.records_table().to_owned();
    let mut locker = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
    sqlx::Executor::execute(&mut locker, "BEGIN").await.unwrap();
    sqlx::Executor::execute(
        &mut locker,
        format!("LOCK TABLE {records} IN ACCESS EXCLUSIVE MODE").as_str(),
    )
    .await
    .unwrap();
    // Cancelled within the store's lock timeout (50 ms), so while its statement still waits.
    let cancelled = tokio::time::timeout(Duration::from_millis(20), claim("stuck")).await;
    assert!(cancelled.is_err(), "the claim waited for the lock");
    sqlx::Executor::execute(&mut locker, "ROLLBACK")
        .await
        .unwrap();

    // Every later statement gets its own answer, on every connection.
    for (name, other) in [("a", "b"), ("c", "d"), ("e", "f")] {
        let (x, y) = tokio::join!(claim(name), claim(other));
        for (n, c) in [(name, x.unwrap()), (other, y.unwrap())] {
            let Claim::Acquired { attempt, .. } = c else {
                panic!("{n}: a new key is acquired: {c:?}");
            };
            assert_eq!(complete(n, attempt).await, Fence::Owned, "{n}");
        }
        for n in [name, other] {
            let c = claim(n).await.unwrap();
            assert!(
                matches!(&c, Claim::Completed(s) if s.bytes == n.as_bytes()),
                "{n} replays its own value: {c:?}"
            );
        }
    }

    // Both connections were kept; the pool's other users still get one.
    let conn = tokio::time::timeout(Duration::from_secs(3), store.pool().acquire()).await;
    assert!(
        matches!(conn, Ok(Ok(_))),
        "kept connections go back to the pool when idle"
    );
    drop(conn);
    let (x, y) = tokio::join!(claim("g"), claim("h"));
    assert!(x.is_ok() && y.is_ok());
    let closed = tokio::time::timeout(Duration::from_secs(5), store.close()).await;
    assert!(closed.is_ok(), "close does not wait for kept connections");
}

/// PostgreSQL transactional steps: the claim, the caller's writes and the snapshot
/// commit in one transaction.
mod steps {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use idem_runtime::store::postgres::{PostgresStore, PostgresStoreBuilder, Step};
    use idem_runtime::store::Store;
    use idem_runtime::{Call, Error, Idem};
    use idem_tests::backends::{fresh_postgres_schema, postgres_store, postgres_url};
    use sqlx::Connection;

    /// A store in a fresh schema with a table `saved` beside idem's, and that table's name.
    async fn store() -> Option<(Arc<PostgresStore>, String)> {
        store_with(|b| b).await
    }

    async fn store_with(
        options: impl FnOnce(PostgresStoreBuilder) -> PostgresStoreBuilder,
    ) -> Option<(Arc<PostgresStore>, String)> {
        let schema = fresh_postgres_schema();
        let store = postgres_store(&schema, options).await?;
        let saved = format!("\"{schema}\".saved");
        sqlx::query(&format!("CREATE TABLE {saved} (k text NOT NULL)"))
            .execute(store.pool())
            .await
            .unwrap();
        Some((Arc::new(store), saved))
    }

    async fn rows(store: &PostgresStore, saved: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {saved}"))
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    /// The step of `op` on key `k`: insert a row, record who wrote it.
    async fn save(
        store: &PostgresStore,
        saved: &str,
        op: &str,
        worker: &str,
    ) -> Result<String, Error> {
        match store
            .begin_step(Call::new(op.to_owned()).key("k"), worker)
            .await?
        {
            Step::Replayed(v) => Ok(v),
            Step::Claimed(mut tx) => {
                sqlx::query(&format!("INSERT INTO {saved} (k) VALUES ('k')"))
                    .execute(tx.conn())
                    .await
                    .unwrap();
                let value = format!("step by {worker}");
                tx.commit(&value).await?;
                Ok(value)
            }
        }
    }

    /// A step abandoned after its write (a crash, a panic, an error) commits nothing: no row,
    /// no record; the next call runs at once, without waiting for a lease.
    #[tokio::test]
    async fn an_abandoned_step_leaves_nothing() {
        let app = format!("idem-test-abandoned-{}", std::process::id());
        let Some((store, saved)) = store_with(|b| b.application_name(&app)).await else {
            return;
        };
        let op = idem_tests::unique_op("pg_tx_abandoned");
        let call = || {
            Call::new(op.clone())
                .key("k")
                .lease(Duration::from_secs(30))
        };
        match store.begin_step::<String>(call(), "w").await.unwrap() {
            Step::Claimed(mut tx) => {
                sqlx::query(&format!("INSERT INTO {saved} (k) VALUES ('k')"))
                    .execute(tx.conn())
                    .await
                    .unwrap();
                drop(tx); // the crash
            }
            Step::Replayed(_) => panic!("a new key must be claimed"),
        }
        assert_eq!(
            rows(&store, &saved).await,
            0,
            "the write rolled back with the claim"
        );
        // Really rolled back, not just invisible: no connection of this store stays idle in
        // the abandoned transaction (it goes back to the store only after its ROLLBACK).
        // (Asked on a connection of its own, never one the store could hand back.)
        let mut probe = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
            )
            .bind(&app)
            .fetch_one(&mut probe)
            .await
            .unwrap();
            if open == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the abandoned transaction stays open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let key = call().key_value();
        assert!(
            store.get(&key).await.unwrap().is_none(),
            "and so did the claim"
        );
        let begun = Instant::now();
        assert_eq!(save(&store, &saved, &op, "w").await.unwrap(), "step by w");
        assert!(
            begun.elapsed() < Duration::from_secs(10),
            "no lease to wait for"
        );
        assert_eq!(
            save(&store, &saved, &op, "v").await.unwrap(),
            "step by w",
            "replayed"
        );
        assert_eq!(rows(&store, &saved).await, 1);
        let log = store.attempts(&key).await.unwrap();
        assert_eq!(log.len(), 1, "one attempt: {log:?}");
    }

    /// A caller's own `begin()` on the step's connection opens a savepoint, not a second
    /// transaction: its `commit()` does not commit the step's claim and writes early, and an
    /// inner transaction left open makes the step's commit fail instead of half-committing.
    #[tokio::test]
    async fn a_nested_transaction_stays_inside_the_step() {
        let Some((store, saved)) = store().await else {
            return;
        };
        let op = idem_tests::unique_op("pg_tx_nested");
        let call = || {
            Call::new(op.clone())
                .key("k")
                .lease(Duration::from_secs(30))
        };
        let Step::Claimed(mut tx) = store.begin_step::<String>(call(), "w").await.unwrap() else {
            panic!("a new key must be claimed");
        };
        let mut inner = sqlx::Connection::begin(tx.conn()).await.unwrap();
        sqlx::query(&format!("INSERT INTO {saved} (k) VALUES ('k')"))
            .execute(&mut *inner)
            .await
            .unwrap();
        inner.commit().await.unwrap();
        drop(tx); // the crash, after the inner commit
        assert_eq!(
            rows(&store, &saved).await,
            0,
            "the inner commit was a savepoint"
        );
        assert!(store.get(&call().key_value()).await.unwrap().is_none());

        let Step::Claimed(mut tx) = store.begin_step::<String>(call(), "w").await.unwrap() else {
            panic!("nothing was recorded, so the step runs");
        };
        let inner = sqlx::Connection::begin(tx.conn()).await.unwrap();
        std::mem::forget(inner); // left open (leaked, so its drop does not roll it back)
        let r = tx.commit(&"v".to_owned()).await;
        assert!(matches!(r, Err(Error::Store { .. })), "{r:?}");
        assert!(store.get(&call().key_value()).await.unwrap().is_none());
        assert_eq!(save(&store, &saved, &op, "w").await.unwrap(), "step by w");
    }

    /// 16 concurrent callers of one transactional step, on two stores (two workers): one row,
    /// one value for all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_steps_write_once() {
        let Some((store, saved)) = store().await else {
            return;
        };
        let other = Arc::new(
            postgres_store(store.schema(), |b| b)
                .await
                .expect("the same server"),
        );
        let op = idem_tests::unique_op("pg_tx_concurrent");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = if i % 2 == 0 {
                    store.clone()
                } else {
                    other.clone()
                };
                let (saved, op) = (saved.clone(), op.clone());
                tokio::spawn(async move { save(&store, &saved, &op, &format!("w{i}")).await })
            })
            .collect();
        let mut values = Vec::new();
        for t in tasks {
            values.push(t.await.unwrap().unwrap());
        }
        assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
        assert_eq!(rows(&store, &saved).await, 1);
    }

    /// Transactional steps and ordinary calls of the same key, racing: one execution, one value
    /// for every caller. Ordinary calls wait on the step's transaction, steps on an ordinary
    /// call's lease.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn steps_and_ordinary_calls_of_one_key_run_once() {
        let Some((store, saved)) = store().await else {
            return;
        };
        let idem = Idem::builder(store.clone()).cache_capacity(0).build();
        let op = idem_tests::unique_op("pg_tx_mixed");
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (store, idem, saved, op, calls) = (
                    store.clone(),
                    idem.clone(),
                    saved.clone(),
                    op.clone(),
                    calls.clone(),
                );
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        save(&store, &saved, &op, &format!("w{i}")).await
                    } else {
                        idem.call(Call::new(op).key("k"), || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Error>(format!("call {i}"))
                        })
                        .await
                    }
                })
            })
            .collect();
        let mut values = Vec::new();
        for t in tasks {
            values.push(t.await.unwrap().unwrap());
        }
        assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
        let executions = rows(&store, &saved).await + calls.load(Ordering::SeqCst) as i64;
        assert_eq!(executions, 1, "{values:?}");
    }

    /// A step holds key K open for 10 s on a store of 4 connections. Meanwhile claims of K
    /// obey their options instead of waiting in their statement: 20 calls refusing to wait get
    /// `InProgress` within 1 s, 20 calls waiting 500 ms get it after about 0.5 s, a second step
    /// refusing to wait gets it at once; and none of them holds a connection while it waits,
    /// so 50 calls of 50 other keys all run within 2 s. Once the step is gone, K runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn claims_blocked_behind_an_open_step_obey_their_options() {
        use idem_runtime::OnConflict;
        let Some((store, saved)) = store_with(|b| b.max_connections(4)).await else {
            return;
        };
        let idem = Idem::builder(store.clone()).cache_capacity(0).build();
        let op = idem_tests::unique_op("pg_tx_blocking");
        let k = || Call::new(op.clone()).key("k");
        let Step::Claimed(mut tx) = store.begin_step::<String>(k(), "w").await.unwrap() else {
            panic!("a new key must be claimed");
        };
        sqlx::query(&format!("INSERT INTO {saved} (k) VALUES ('k')"))
            .execute(tx.conn())
            .await
            .unwrap();
        let begun = Instant::now();
        let holder = tokio::spawn(async move {
            tokio::time::sleep_until((begun + Duration::from_secs(10)).into()).await;
            drop(tx);
        });

        let call_k = |call: Call| {
            let idem = idem.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let r = idem
                    .call(call, || async { Ok::<_, Error>("ran".to_owned()) })
                    .await;
                (r, started.elapsed())
            })
        };
        let refusing: Vec<_> = (0..20)
            .map(|_| call_k(k().on_conflict(OnConflict::Error)))
            .collect();
        let waiting: Vec<_> = (0..20)
            .map(|_| call_k(k().wait(Duration::from_millis(500))))
            .collect();
        let others: Vec<_> = (0..50)
            .map(|i| call_k(Call::new(op.clone()).key(&format!("other-{i}"))))
            .collect();
        let second = {
            let store = store.clone();
            let call = k().on_conflict(OnConflict::Error);
            tokio::spawn(async move {
                let started = Instant::now();
                let r = store.begin_step::<String>(call, "v").await.map(|_| ());
                (r, started.elapsed())
            })
        };

        let mut slowest = [Duration::ZERO; 3];
        for t in refusing {
            let (r, took) = t.await.unwrap();
            assert!(matches!(r, Err(Error::InProgress { .. })), "{r:?}");
            assert!(took < Duration::from_secs(1), "refused after {took:?}");
            slowest[0] = slowest[0].max(took);
        }
        let mut quickest = Duration::MAX;
        for t in waiting {
            let (r, took) = t.await.unwrap();
            assert!(matches!(r, Err(Error::InProgress { .. })), "{r:?}");
            assert!(
                took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
                "gave up after {took:?}"
            );
            slowest[1] = slowest[1].max(took);
            quickest = quickest.min(took);
        }
        for t in others {
            let (r, took) = t.await.unwrap();
            assert_eq!(r.unwrap(), "ran");
            assert!(took < Duration::from_secs(2), "another key took {took:?}");
            slowest[2] = slowest[2].max(took);
        }
        eprintln!(
            "refused within {:?}, waiting gave up after {quickest:?}..{:?}, other keys within {:?}",
            slowest[0], slowest[1], slowest[2]
        );
        let (r, took) = second.await.unwrap();
        assert!(matches!(r, Err(Error::InProgress { .. })), "{r:?}");
        assert!(
            took < Duration::from_secs(1),
            "the second step took {took:?}"
        );
        assert!(
            begun.elapsed() < Duration::from_secs(9),
            "all of it while the step was open"
        );

        holder.await.unwrap();
        let r = idem
            .call(k(), || async { Ok::<_, Error>("after".to_owned()) })
            .await;
        assert_eq!(r.unwrap(), "after", "the rolled-back step left K free");
        assert_eq!(rows(&store, &saved).await, 0);
    }
}

/// More callers than connections: a caller waiting for the pool gets a connection as soon as
/// one is finished with, instead of the kept connections circulating among newcomers while it
/// times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kept_connections_do_not_starve_callers_waiting_for_the_pool() {
    let Some(store) = postgres_store(&fresh_postgres_schema(), |b| {
        b.max_connections(2)
            .acquire_timeout(Duration::from_millis(1500))
    })
    .await
    else {
        return;
    };
    let store = Arc::new(store);
    let op = idem_tests::unique_op("starve");
    let until = Instant::now() + Duration::from_secs(4);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (store, op) = (store.clone(), op.clone());
            tokio::spawn(async move {
                let mut done = 0_u32;
                while Instant::now() < until {
                    let key = Call::new(op.clone()).key(&(t, done)).key_value();
                    let req = plain_request(&op, &key, "w");
                    let Claim::Acquired { attempt, .. } = store.claim(&req).await? else {
                        panic!("a new key is acquired");
                    };
                    let a = AttemptRef {
                        op: &op,
                        key: &key,
                        attempt,
                    };
                    let outcome = Outcome::Snapshot {
                        kind: SnapshotKind::Ok,
                        bytes: b"1",
                        ttl: Duration::from_secs(3600),
                        cost: None,
                    };
                    assert_eq!(store.complete(&a, outcome).await?, Fence::Owned);
                    done += 1;
                }
                Ok::<_, Error>(done)
            })
        })
        .collect();
    for (t, task) in tasks.into_iter().enumerate() {
        let done = task.await.unwrap();
        assert!(
            matches!(done, Ok(n) if n > 0),
            "task {t} got no connection in time: {done:?}"
        );
    }
}

/// A sequence can fall behind its table where only tables travel (a restore without sequences,
/// a logical-replication switchover): opening the store raises the attempt floor's mirror to
/// the floor again, so new keys still start above every deleted attempt.
#[tokio::test]
async fn opening_raises_a_mirror_left_behind() {
    let schema = fresh_postgres_schema();
    let Some(store) = postgres_store(&schema, |b| b).await else {
        return;
    };
    sqlx::query(&format!(
        "UPDATE \"{schema}\".idem_meta SET value = 7 WHERE name = 'attempt_floor'"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(&format!(
        "SELECT setval('\"{schema}\".idem_attempt_floor', 0, true)"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let reopened = postgres_store(&schema, |b| b).await.unwrap();
    let op = idem_tests::unique_op("healed");
    let key = Call::new(op.clone()).key(&"k").key_value();
    let claim = reopened
        .claim(&plain_request(&op, &key, "w"))
        .await
        .unwrap();
    assert!(
        matches!(claim, Claim::Acquired { attempt: 8, .. }),
        "{claim:?}"
    );
}

/// With the `postgres-tls` feature, a URL that asks for TLS gets an encrypted connection
/// (`sslmode=require` encrypts without verifying the server's certificate, which on the test
/// server is its own self-signed one).
#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn a_url_asking_for_tls_gets_it() {
    let schema = fresh_postgres_schema();
    let Some(plain) = postgres_store(&schema, |b| b).await else {
        return;
    };
    let offered: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(plain.pool())
        .await
        .unwrap();
    if offered != "on" {
        assert!(
            !idem_tests::servers_required(),
            "the test server must offer TLS (ssl = on) under CI"
        );
        eprintln!("\n*** SKIPPED: the PostgreSQL test server does not offer TLS ***\n");
        return;
    }
    let url = postgres_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = PostgresStore::builder(&format!("{url}{sep}sslmode=require"))
        .schema(&schema)
        .open()
        .await
        .unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(encrypted, "the store's connection is encrypted");
    let idem = Idem::builder(Arc::new(store)).cache_capacity(0).build();
    let runs = AtomicUsize::new(0);
    let op = idem_tests::unique_op("tls");
    for _ in 0..2 {
        assert_eq!(count_call(&idem, &op, &runs).await.unwrap(), "ran");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Steps in the caller's own transaction on the application's own pool, with idem's tables in
/// their own schema: the attribute's `tx = ...`, a rollback, and concurrent callers of one key.
mod caller_transactions {
    use idem_runtime::{idempotent, Error, Idem};
    use idem_tests::backends::{fresh_postgres_schema, postgres_store, postgres_url};
    use sqlx::PgPool;

    #[idempotent(key = (order_id), tx = tx, store = idem)]
    async fn save_order(
        idem: &Idem,
        table: &str,
        order_id: i64,
        tx: &mut sqlx::PgTransaction<'_>,
    ) -> Result<u64, Error> {
        let done = sqlx::query(&format!("INSERT INTO {table} (id) VALUES ($1)"))
            .bind(order_id)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }

    async fn setup() -> Option<(String, Idem, PgPool, String)> {
        let schema = fresh_postgres_schema();
        let store = postgres_store(&schema, |b| b).await?;
        let idem = Idem::new(store);
        let pool = PgPool::connect(&postgres_url()).await.unwrap();
        let table = format!("\"{schema}\".orders");
        sqlx::query(&format!("CREATE TABLE {table} (id bigint NOT NULL)"))
            .execute(&pool)
            .await
            .unwrap();
        Some((schema, idem, pool, table))
    }

    async fn rows(pool: &PgPool, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_attribute_writes_once_on_the_applications_pool() {
        let Some((_schema, idem, pool, table)) = setup().await else {
            return;
        };
        // Rolled back: nothing stays, not even the claim.
        let mut tx = pool.begin().await.unwrap();
        assert_eq!(save_order(&idem, &table, 1, &mut tx).await.unwrap(), 1);
        tx.rollback().await.unwrap();
        assert_eq!(rows(&pool, &table).await, 0);
        // Eight callers at once: one writes, the others wait for its commit and replay.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (idem, pool, table) = (idem.clone(), pool.clone(), table.clone());
                tokio::spawn(async move {
                    let mut tx = pool.begin().await.unwrap();
                    let n = save_order(&idem, &table, 1, &mut tx).await.unwrap();
                    tx.commit().await.unwrap();
                    n
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1);
        }
        assert_eq!(rows(&pool, &table).await, 1);
    }
}

/// Purge in batches much smaller than the table: exactly the expired and abandoned records go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_in_small_batches_deletes_exactly_the_expired() {
    let Some(backend) = idem_tests::backends::postgres().await else {
        return;
    };
    idem_tests::operator::purge_in_small_batches_deletes_exactly_the_expired(&backend).await;
}

/// Claims of new keys and completions batched while many are pending (`batch_after`): every key
/// runs once, every caller of a key gets its value, a key twice in one batch is decided like a
/// duplicate alone, and the store reports that batches did go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_claims_and_completions_decide_like_single_ones() {
    let Some(store) = postgres_store(&fresh_postgres_schema(), |b| {
        b.batch_after(1).max_connections(4)
    })
    .await
    else {
        return;
    };
    let idem = Idem::builder(Arc::new(store.clone()))
        .cache_capacity(0)
        .build();
    let op = idem_tests::unique_op("batched");
    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..100).map(|_| AtomicUsize::new(0)).collect());
    let mut tasks = Vec::new();
    for round in 0..3 {
        for i in 0..100usize {
            // Every key three times: concurrently in the first rounds (same batch or a
            // waiter), then as replays.
            let (idem, op, runs) = (idem.clone(), op.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                idem.call(
                    Call::new(op).key(&i).lease(Duration::from_millis(5000)),
                    || async move {
                        runs[i].fetch_add(1, Ordering::SeqCst);
                        Ok::<_, TestError>(format!("value {i}"))
                    },
                )
                .await
                .map(|v| (round, i, v))
            }));
        }
    }
    for t in tasks {
        let (_, i, v) = t.await.unwrap().unwrap();
        assert_eq!(v, format!("value {i}"));
    }
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.load(Ordering::SeqCst), 1, "key {i} ran more than once");
    }
    let stats = store.batch_stats();
    assert!(
        stats.claim_batches > 0 && stats.claims > stats.claim_batches,
        "{stats:?}"
    );
    assert!(
        stats.completion_batches > 0 && stats.completions > stats.completion_batches,
        "{stats:?}"
    );
}

/// A batched completion is fenced row by row: in one batch, the attempts that own their keys
/// complete and the ones that lost them (a wrong attempt number) are told `Lost` and write
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_completions_are_fenced_row_by_row() {
    let Some(store) = postgres_store(&fresh_postgres_schema(), |b| {
        b.batch_after(1).max_connections(4)
    })
    .await
    else {
        return;
    };
    let op = idem_tests::unique_op("batched_fence");
    let keys: Vec<idem_runtime::Key> = (0..64)
        .map(|i| Call::new(op.clone()).key(&i).key_value())
        .collect();
    let mut attempts = Vec::new();
    for key in &keys {
        match store.claim(&plain_request(&op, key, "w")).await.unwrap() {
            Claim::Acquired { attempt, .. } => attempts.push(attempt),
            other => panic!("a new key: {other:?}"),
        }
    }
    let before = store.batch_stats();
    let mut tasks = Vec::new();
    for (i, (key, attempt)) in keys.iter().zip(&attempts).enumerate() {
        let (store, op, key) = (store.clone(), op.clone(), *key);
        // Odd keys complete with an attempt that is not theirs.
        let attempt = if i % 2 == 1 { attempt + 1000 } else { *attempt };
        tasks.push(tokio::spawn(async move {
            let a = AttemptRef {
                op: &op,
                key: &key,
                attempt,
            };
            let bytes = format!("{i}");
            let outcome = Outcome::Snapshot {
                kind: SnapshotKind::Ok,
                bytes: bytes.as_bytes(),
                ttl: Duration::from_secs(3600),
                cost: None,
            };
            store.complete(&a, outcome).await.unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let fence = t.await.unwrap();
        let expected = if i % 2 == 1 {
            Fence::Lost
        } else {
            Fence::Owned
        };
        assert_eq!(fence, expected, "key {i}");
        let record = store.get(&keys[i]).await.unwrap().unwrap();
        if i % 2 == 1 {
            assert_eq!(
                record.status,
                idem_runtime::record::Status::Running,
                "key {i}"
            );
            assert!(record.snapshot.is_none(), "key {i}");
        } else {
            assert_eq!(
                record.status,
                idem_runtime::record::Status::Completed,
                "key {i}"
            );
            assert_eq!(record.snapshot.as_deref(), Some(format!("{i}").as_bytes()));
        }
    }
    let after = store.batch_stats();
    assert!(
        after.completion_batches > before.completion_batches,
        "{after:?}"
    );
}
