//! Several OS processes on one SQLite file: exactly-once execution, and takeover after kill -9.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use idem_runtime::{Call, Idem};
use idem_tests::effects::Effects;
use idem_tests::takeover::{
    assert_killed_stream_is_taken_over, assert_killed_worker_is_taken_over, spawn_started,
};
use tokio::process::Command;

const WORKER: &str = env!("CARGO_BIN_EXE_idem-test-worker");

/// 4 processes, 500 keys each requested by every process: each executed exactly once in total,
/// and every caller received the value of that one execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_500_keys_execute_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    Idem::open(&url).await.unwrap(); // create and migrate once, up front
    let op = idem_tests::unique_op("processes");
    let files: Vec<_> = (0..4)
        .map(|i| dir.path().join(format!("effects-{i}.txt")))
        .collect();
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            Command::new(WORKER)
                .args(["many", &url, &op, "500", "8", f.to_str().unwrap()])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().await.unwrap().success(), "a worker failed");
    }
    Effects::read(&files).assert_exactly_once(500, 4);
}

/// A 5-step pipeline killed mid-step at each step in turn resumes where it stopped, and every
/// step takes effect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_resumes_where_it_was_killed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("resume.db").display());
    Idem::open(&url).await.unwrap();
    idem_tests::resume::pipeline_resumes_where_it_was_killed(WORKER, &url).await;
}

/// kill -9 of a worker mid-body: after one lease another worker re-executes, and the attempts
/// log shows the abandoned attempt.
#[tokio::test]
async fn killed_worker_is_taken_over_after_one_lease() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kill.db").display());
    Idem::open(&url).await.unwrap();
    let op = idem_tests::unique_op("kill9");
    let lease_ms = 500;
    let child = spawn_started(WORKER, &["hang", &url, &op, "job-1", &lease_ms.to_string()]).await;

    let idem = Idem::builder(idem_runtime::store::open(&url).await.unwrap())
        .cache_capacity(0)
        .worker("survivor")
        .build();
    assert_killed_worker_is_taken_over(child, &idem, &op, lease_ms).await;
}

/// kill -9 of a worker mid-stream: a duplicate following it (polling the file) gets the chunks
/// journaled so far, then `StreamInterrupted`; the next call takes over and generates anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_stream_is_taken_over_after_one_lease() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("stream-kill.db").display());
    Idem::open(&url).await.unwrap();
    let op = idem_tests::unique_op("stream_kill9");
    let lease_ms = 500;
    let child = spawn_started(
        WORKER,
        &["stream-hang", &url, &op, "stream-1", &lease_ms.to_string()],
    )
    .await;
    let idem = Idem::builder(idem_runtime::store::open(&url).await.unwrap())
        .cache_capacity(0)
        .worker("survivor")
        .build();
    assert_killed_stream_is_taken_over(child, &idem, &op, lease_ms).await;
}

/// kill -9 in the middle of a transactional step, after its write: nothing was committed (no
/// row, no claim), and the next caller runs the step at once (no lease to wait for).
#[tokio::test]
async fn killed_transactional_step_leaves_nothing() {
    use idem_runtime::store::sqlite::{SqliteStore, Step};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("step.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    sqlx::query("CREATE TABLE saved (k TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    let op = idem_tests::unique_op("step_kill9");
    let mut child = spawn_started(WORKER, &["step-hang", &url, &op, "order-1"]).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM saved")
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    assert_eq!(
        count().await,
        0,
        "the killed step's row was never committed"
    );
    let begun = Instant::now();
    let call = Call::new(op.clone()).key(&"order-1");
    match store.begin_step::<i64>(call, "survivor").await.unwrap() {
        Step::Claimed(mut tx) => {
            sqlx::query("INSERT INTO saved (k) VALUES ('order-1')")
                .execute(tx.conn())
                .await
                .unwrap();
            tx.commit(&1_i64).await.unwrap();
        }
        Step::Replayed(_) => panic!("nothing was recorded, so the step must run"),
    }
    assert!(
        begun.elapsed() < Duration::from_secs(2),
        "no lease to wait for"
    );
    assert_eq!(count().await, 1);
}
