//! The store conformance suite on the SQLite store, plus SQLite-only failure modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idem_runtime::store::sqlite::SqliteStore;
use idem_runtime::{Error, Idem};
use idem_tests::conformance::{count_call, TestError};

idem_tests::conformance_suite!(idem_tests::backends::sqlite());

/// A corrupt snapshot row: a typed error naming op and key; no panic, no re-run.
#[tokio::test]
async fn corrupt_snapshot_row_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    let pool = store.pool().clone();
    let idem = Idem::builder(std::sync::Arc::new(store))
        .cache_capacity(0)
        .build();
    let runs = AtomicUsize::new(0);
    count_call(&idem, "corrupt", &runs).await.unwrap();
    sqlx::query("UPDATE idem_records SET snapshot = x'00ff13'")
        .execute(&pool)
        .await
        .unwrap();
    let r = count_call(&idem, "corrupt", &runs).await;
    match r {
        Err(TestError::Idem(e @ Error::SnapshotDecode { .. })) => {
            assert!(e.to_string().contains("`corrupt`"), "{e}");
        }
        other => panic!("expected SnapshotDecode, got {other:?}"),
    }
    // A row that breaks the format (a completed record without its snapshot).
    sqlx::query("UPDATE idem_records SET snapshot = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let r = count_call(&idem, "corrupt", &runs).await;
    assert!(
        matches!(r, Err(TestError::Idem(Error::Corrupt { .. }))),
        "{r:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A database locked by another connection past the busy timeout: typed store error, body not run.
#[tokio::test]
async fn locked_database_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("locked.db").display());
    let store = SqliteStore::builder(&url)
        .busy_timeout(Duration::from_millis(200))
        .open()
        .await
        .unwrap();
    let idem = Idem::builder(std::sync::Arc::new(store))
        .cache_capacity(0)
        .build();

    use sqlx::Connection;
    let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let runs = AtomicUsize::new(0);
    let r = count_call(&idem, "locked", &runs).await;
    match r {
        Err(TestError::Idem(
            e @ Error::Store {
                action: "claim", ..
            },
        )) => {
            assert!(e.to_string().contains("`locked`"), "{e}");
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "fail closed: the body never ran"
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    count_call(&idem, "locked", &runs).await.unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "works again once the lock is gone"
    );
}

/// A read-only database: typed store error, body not run.
#[tokio::test]
async fn unwritable_database_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.db");
    SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
        .close()
        .await;
    let idem = Idem::open(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let runs = AtomicUsize::new(0);
    let r = count_call(&idem, "readonly", &runs).await;
    assert!(
        matches!(
            &r,
            Err(TestError::Idem(Error::Store {
                action: "claim",
                ..
            }))
        ),
        "{r:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// A path that cannot be created: a typed open error.
#[tokio::test]
async fn uncreatable_database_is_an_open_error() {
    let r = Idem::open("sqlite:///nonexistent-dir-idem/sub/x.db").await;
    assert!(matches!(r, Err(Error::Open { .. })), "{r:?}");
    let r = Idem::open("mysql://localhost/db").await;
    assert!(matches!(r, Err(Error::Open { .. })), "{r:?}");
}

/// Migrations are idempotent: many handles opening one file at once all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { SqliteStore::open(&url).await })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
    let store = SqliteStore::open(&url).await.unwrap();
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM idem_schema ORDER BY version")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        versions,
        (1..=idem_runtime::store::sqlite::FORMAT_VERSION).collect::<Vec<_>>(),
        "each version applied once"
    );
}

/// A database created by format version 1 (`tests/fixtures/sqlite_format_v1.sql`, frozen) is
/// upgraded in place when opened: its records replay, new attempts start above its attempt
/// floor, and streams work after the upgrade (append, read, deleted with their record).
#[tokio::test]
async fn upgrades_a_version_1_database_in_place() {
    use idem_runtime::store::{AttemptRef, Claim, ClaimRequest, Fence, Store, StoredChunk};
    use idem_runtime::Call;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::Executor::execute(&mut conn, include_str!("fixtures/sqlite_format_v1.sql"))
        .await
        .unwrap();
    let op = idem_tests::unique_op("upgrade");
    let key = Call::new(op.clone()).key(&"k").key_value();
    // A completed record and a raised floor, as version 1 wrote them.
    let now = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
    sqlx::query(&format!(
        "INSERT INTO idem_records (key, op, status, attempt, snapshot, snapshot_kind, worker,
             created_at, updated_at, expires_at, attempt_started_at, attempt_outcome)
         VALUES (?1, ?2, 'completed', 3, CAST('\"from v1\"' AS BLOB), 'ok', 'old',
                 {now}, {now}, {now} + 3600000, {now}, 'completed')"
    ))
    .bind(&key.0[..])
    .bind(&op)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("UPDATE idem_meta SET value = 7 WHERE name = 'attempt_floor'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM idem_schema ORDER BY version")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        versions,
        (1..=idem_runtime::store::sqlite::FORMAT_VERSION).collect::<Vec<_>>()
    );
    let store = std::sync::Arc::new(store);
    let idem = Idem::builder(store.clone()).cache_capacity(0).build();
    let runs = AtomicUsize::new(0);
    assert_eq!(
        count_call(&idem, &op, &runs).await.unwrap(),
        "from v1",
        "a version-1 record replays"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // A stream on the upgraded database.
    let fresh = Call::new(op.clone()).key(&"stream").key_value();
    let req = ClaimRequest {
        op: &op,
        key: &fresh,
        fingerprint: None,
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(3600),
        worker: "w",
        parent: None,
    };
    let attempt = match store.claim(&req).await.unwrap() {
        Claim::Acquired { attempt, .. } => attempt,
        other => panic!("expected Acquired, got {other:?}"),
    };
    assert_eq!(
        attempt, 8,
        "a new key starts above version 1's attempt floor"
    );
    let a = AttemptRef {
        op: &op,
        key: &fresh,
        attempt,
    };
    let chunks: Vec<StoredChunk> = (0..3u32)
        .map(|i| StoredChunk {
            offset_ms: i * 5,
            bytes: format!("{i}").into_bytes(),
        })
        .collect();
    assert_eq!(
        store.append_chunks(&a, 0, &chunks).await.unwrap(),
        Fence::Owned
    );
    assert_eq!(
        store.read_chunks(&fresh, attempt, 0, 10).await.unwrap(),
        chunks
    );
    assert_eq!(store.count_chunks(&fresh, attempt).await.unwrap(), 3);
    // The upgrade's trigger deletes a stream with its record.
    assert!(store.forget(&fresh, true).await.unwrap());
    assert_eq!(store.count_chunks(&fresh, attempt).await.unwrap(), 0);
}

mod transactional_steps {
    use std::sync::Arc;

    use idem_runtime::store::sqlite::{SqliteStore, Step};
    use idem_runtime::{Call, Error};

    async fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tx.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        sqlx::query("CREATE TABLE saved (k TEXT NOT NULL)")
            .execute(store.pool())
            .await
            .unwrap();
        (dir, Arc::new(store))
    }

    async fn rows(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM saved")
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    async fn save(store: &SqliteStore, op: &str, worker: &str) -> Result<i64, Error> {
        match store
            .begin_step(Call::new(op.to_owned()).key("k"), worker)
            .await?
        {
            Step::Replayed(v) => Ok(v),
            Step::Claimed(mut tx) => {
                let done = sqlx::query("INSERT INTO saved (k) VALUES ('k')")
                    .execute(tx.conn())
                    .await
                    .unwrap();
                let id = done.last_insert_rowid();
                tx.commit(&id).await?;
                Ok(id)
            }
        }
    }

    /// A step abandoned after its write (a crash, a panic, an error) commits nothing: no row,
    /// no record; the next call runs at once, without waiting for a lease.
    #[tokio::test]
    async fn an_abandoned_step_leaves_nothing() {
        let (_dir, store) = store().await;
        let call = || Call::new("tx_abandoned").key("k");
        match store.begin_step::<i64>(call(), "w").await.unwrap() {
            Step::Claimed(mut tx) => {
                sqlx::query("INSERT INTO saved (k) VALUES ('k')")
                    .execute(tx.conn())
                    .await
                    .unwrap();
                drop(tx); // the crash
            }
            Step::Replayed(_) => panic!("a new key must be claimed"),
        }
        assert_eq!(
            rows(&store).await,
            0,
            "the write rolled back with the claim"
        );
        let key = call().key_value();
        use idem_runtime::Store;
        assert!(
            store.get(&key).await.unwrap().is_none(),
            "and so did the claim"
        );
        let begun = std::time::Instant::now();
        assert_eq!(save(&store, "tx_abandoned", "w").await.unwrap(), 1);
        assert!(
            begun.elapsed() < std::time::Duration::from_secs(1),
            "no lease to wait for"
        );
        assert_eq!(
            save(&store, "tx_abandoned", "w").await.unwrap(),
            1,
            "replayed"
        );
        assert_eq!(rows(&store).await, 1);
        let log = store.attempts(&key).await.unwrap();
        assert_eq!(log.len(), 1, "one attempt: {log:?}");
    }

    /// While a step holds SQLite's write lock (3 s here), a replay of another key is a pure
    /// read and returns at once (it used to wait for the lock: the claim's insert, even one
    /// that inserts nothing, takes it); claims of the step's own key obey their options: a
    /// call refusing to wait and a second step get `InProgress` at once, a call waiting 500 ms
    /// gets it after about that long. Once the step is gone, its key runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn claims_while_a_step_holds_the_write_lock() {
        use std::time::{Duration, Instant};

        use idem_runtime::{Idem, OnConflict};
        let (_dir, store) = store().await;
        let idem = Idem::builder(store.clone()).cache_capacity(0).build();
        let run = |call: Call, value: &'static str| {
            let idem = idem.clone();
            async move {
                let started = Instant::now();
                let r = idem
                    .call(call, || async move { Ok::<_, Error>(value.to_owned()) })
                    .await;
                (r, started.elapsed())
            }
        };
        let done = || Call::new("tx_lock_other").key("done");
        assert_eq!(run(done(), "first").await.0.unwrap(), "first");
        let k = || Call::new("tx_lock").key("k");

        let Step::Claimed(mut tx) = store.begin_step::<i64>(k(), "w").await.unwrap() else {
            panic!("a new key must be claimed");
        };
        sqlx::query("INSERT INTO saved (k) VALUES ('k')")
            .execute(tx.conn())
            .await
            .unwrap();
        let begun = Instant::now();
        let holder = tokio::spawn(async move {
            tokio::time::sleep_until((begun + Duration::from_secs(3)).into()).await;
            drop(tx);
        });

        let (r, took) = run(done(), "again").await;
        assert_eq!(r.unwrap(), "first", "replayed");
        assert!(
            took < Duration::from_millis(300),
            "the replay took {took:?}"
        );
        eprintln!("a replay of another key while the step holds the write lock: {took:?}");

        let (r, took) = run(k().on_conflict(OnConflict::Error), "no").await;
        assert!(matches!(r, Err(Error::InProgress { .. })), "{r:?}");
        assert!(took < Duration::from_millis(300), "refused after {took:?}");

        let (r, took) = run(k().wait(Duration::from_millis(500)), "no").await;
        assert!(matches!(r, Err(Error::InProgress { .. })), "{r:?}");
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(1000),
            "gave up after {took:?}"
        );

        let started = Instant::now();
        let r = store
            .begin_step::<i64>(k().on_conflict(OnConflict::Error), "v")
            .await;
        assert!(matches!(r, Err(Error::InProgress { .. })), "{r:?}");
        assert!(started.elapsed() < Duration::from_millis(300));
        assert!(
            begun.elapsed() < Duration::from_secs(3),
            "all while the step was open"
        );

        holder.await.unwrap();
        let (r, _) = run(k(), "after").await;
        assert_eq!(
            r.unwrap(),
            "after",
            "the rolled-back step left its key free"
        );
        assert_eq!(rows(&store).await, 0);
    }

    /// 16 concurrent callers of one transactional step: one row, one value for all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_steps_write_once() {
        let (_dir, store) = store().await;
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { save(&store, "tx_concurrent", &format!("w{i}")).await })
            })
            .collect();
        let mut values = Vec::new();
        for t in tasks {
            values.push(t.await.unwrap().unwrap());
        }
        assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
        assert_eq!(rows(&store).await, 1);
    }
}

/// Steps in the caller's own transaction (`Idem::step`, `#[idempotent(tx = ...)]`): the claim,
/// the writes and the snapshot commit or roll back with the caller's transaction.
mod caller_transactions {
    use idem_runtime::{idempotent, Call, Error, Idem, StepStart};
    use sqlx::SqlitePool;

    async fn setup() -> (tempfile::TempDir, Idem, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("app.db").display());
        let idem = Idem::open(&url).await.unwrap();
        // The application's own pool on the same file.
        let pool = SqlitePool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE orders (id INTEGER NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        (dir, idem, pool)
    }

    async fn rows(pool: &SqlitePool) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[idempotent(key = (order_id), tx = tx, store = idem)]
    async fn save_order(
        idem: &Idem,
        order_id: i64,
        tx: &mut sqlx::SqliteTransaction<'_>,
    ) -> Result<i64, Error> {
        let done = sqlx::query("INSERT INTO orders (id) VALUES (?)")
            .bind(order_id)
            .execute(&mut **tx)
            .await?;
        Ok(done.last_insert_rowid())
    }

    #[tokio::test]
    async fn the_attribute_writes_once_in_the_callers_transaction() {
        let (_dir, idem, pool) = setup().await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            let mut tx = pool.begin().await.unwrap();
            ids.push(save_order(&idem, 7, &mut tx).await.unwrap());
            tx.commit().await.unwrap();
        }
        assert_eq!(ids, [1, 1, 1], "replays return the committed snapshot");
        assert_eq!(rows(&pool).await, 1);
    }

    #[tokio::test]
    async fn a_rolled_back_transaction_takes_the_claim_with_it() {
        let (_dir, idem, pool) = setup().await;
        let call = || Call::new("orders.save").key(&1_i64);
        let mut tx = pool.begin().await.unwrap();
        let id: i64 = idem
            .step(call(), &mut tx, |tx| {
                Box::pin(async move {
                    let done = sqlx::query("INSERT INTO orders (id) VALUES (1)")
                        .execute(&mut **tx)
                        .await?;
                    Ok::<_, Error>(done.last_insert_rowid())
                })
            })
            .await
            .unwrap();
        assert_eq!(id, 1);
        tx.rollback().await.unwrap();
        assert_eq!(rows(&pool).await, 0);
        assert!(
            idem.record(&call().key_value()).await.unwrap().is_none(),
            "no claim left"
        );
        // The next call runs the step again, and commits.
        let mut tx = pool.begin().await.unwrap();
        let claimed = idem.begin_step::<_, i64>(call(), &mut tx).await.unwrap();
        let StepStart::Claimed(claim) = claimed else {
            panic!("a rolled-back claim is gone: the key is new again")
        };
        sqlx::query("INSERT INTO orders (id) VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        claim.complete(&mut tx, &1).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&pool).await, 1);
        let mut tx = pool.begin().await.unwrap();
        match idem.begin_step::<_, i64>(call(), &mut tx).await.unwrap() {
            StepStart::Replayed(v) => assert_eq!(v, 1),
            StepStart::Claimed(_) => panic!("committed: it replays"),
        }
    }

    #[tokio::test]
    async fn a_result_over_the_snapshot_limit_is_an_error_so_the_caller_rolls_back() {
        let (dir, _, pool) = setup().await;
        let url = format!("sqlite://{}", dir.path().join("app.db").display());
        let idem = Idem::builder(idem_runtime::store::open(&url).await.unwrap())
            .max_snapshot_bytes(16)
            .build();
        let mut tx = pool.begin().await.unwrap();
        let big: Result<String, Error> = idem
            .step(Call::new("orders.big").key(&1_i64), &mut tx, |tx| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO orders (id) VALUES (1)")
                        .execute(&mut **tx)
                        .await?;
                    Ok("x".repeat(100))
                })
            })
            .await;
        assert!(
            matches!(big, Err(Error::SnapshotTooLarge { .. })),
            "{big:?}"
        );
        drop(tx);
        assert_eq!(rows(&pool).await, 0);
    }

    #[tokio::test]
    async fn a_step_needs_a_handle_on_the_same_database() {
        let (_dir, _, pool) = setup().await;
        let memory = Idem::memory();
        let mut tx = pool.begin().await.unwrap();
        let wrong: Result<i64, Error> = memory
            .step(Call::new("orders.x").key(&1_i64), &mut tx, |_| {
                Box::pin(async { Ok(1) })
            })
            .await;
        match wrong {
            Err(Error::Config(m)) => assert!(
                m.contains("SQLite connection") && m.contains("memory"),
                "{m}"
            ),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}

/// `Idem::step`'s future can be spawned (it is `Send` when the body's is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idem_step_can_be_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("spawn.db").display());
    let idem = idem_runtime::Idem::open(&url).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let task = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        let v: i64 = idem
            .step(
                idem_runtime::Call::new("spawned").key(&1_i64),
                &mut tx,
                |tx| {
                    Box::pin(async move {
                        sqlx::query("SELECT 1").execute(&mut **tx).await?;
                        Ok::<_, Error>(1)
                    })
                },
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        v
    });
    assert_eq!(task.await.unwrap(), 1);
}

/// Purge in batches much smaller than the table: exactly the expired and abandoned records go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_in_small_batches_deletes_exactly_the_expired() {
    let Some(backend) = idem_tests::backends::sqlite().await else {
        return;
    };
    idem_tests::operator::purge_in_small_batches_deletes_exactly_the_expired(&backend).await;
}
