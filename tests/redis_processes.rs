//! Several OS processes on one Redis server: exactly-once execution across 8 processes, and
//! takeover after kill -9 (of a call and of a stream). Each test uses its own key prefix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use idem_runtime::store::redis::RedisStore;
use idem_runtime::Idem;
use idem_tests::backends::{fresh_redis_prefix, redis_store_at, redis_url};
use idem_tests::effects::Effects;
use idem_tests::takeover::{
    assert_killed_stream_is_taken_over, assert_killed_worker_is_taken_over, spawn_started,
};
use tokio::process::Command;

const WORKER: &str = env!("CARGO_BIN_EXE_idem-test-worker");

/// A store under a fresh prefix, and the URL worker processes open it by; `None` (after a loud
/// SKIPPED, or a panic in CI) when the server is unreachable.
async fn fresh_store() -> Option<(String, RedisStore)> {
    let prefix = fresh_redis_prefix();
    let url = redis_url();
    let store = redis_store_at(&url, |b| b.prefix(&prefix)).await?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some((format!("{url}{sep}idem_prefix={prefix}"), store))
}

fn handle(store: RedisStore, worker: &str) -> Idem {
    Idem::builder(Arc::new(store))
        .cache_capacity(0)
        .worker(worker)
        .build()
}

/// 8 processes x 32 tasks, `IDEM_TEST_STORM_KEYS` keys (default 2,000) each requested by every
/// process: exactly one execution per key, and every caller received that execution's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_execute_each_key_once() {
    let Some((url, _store)) = fresh_store().await else {
        return;
    };
    let keys: u32 = std::env::var("IDEM_TEST_STORM_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let op = idem_tests::unique_op("redis_processes");
    let files: Vec<_> = (0..8)
        .map(|i| dir.path().join(format!("effects-{i}.txt")))
        .collect();
    let started = Instant::now();
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            Command::new(WORKER)
                .args([
                    "many",
                    &url,
                    &op,
                    &keys.to_string(),
                    "32",
                    f.to_str().unwrap(),
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().await.unwrap().success(), "a worker failed");
    }
    eprintln!("8 processes x {keys} keys: {:?}", started.elapsed());
    Effects::read(&files).assert_exactly_once(keys as usize, 8);
}

/// kill -9 of a worker mid-body: its heartbeat held the key while it lived; after one lease
/// another worker takes over, and the attempts log shows the abandoned attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_is_taken_over_after_one_lease() {
    let Some((url, store)) = fresh_store().await else {
        return;
    };
    let op = idem_tests::unique_op("redis_kill9");
    let lease_ms = 500;
    let child = spawn_started(WORKER, &["hang", &url, &op, "job-1", &lease_ms.to_string()]).await;
    assert_killed_worker_is_taken_over(child, &handle(store, "survivor"), &op, lease_ms).await;
}

/// kill -9 of a worker mid-stream: a duplicate following it (woken by pub/sub) gets the chunks
/// journaled so far, then `StreamInterrupted`; the next call takes over and generates anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_stream_is_taken_over_after_one_lease() {
    let Some((url, store)) = fresh_store().await else {
        return;
    };
    let op = idem_tests::unique_op("redis_stream_kill9");
    let lease_ms = 500;
    let child = spawn_started(
        WORKER,
        &["stream-hang", &url, &op, "stream-1", &lease_ms.to_string()],
    )
    .await;
    assert_killed_stream_is_taken_over(child, &handle(store, "survivor"), &op, lease_ms).await;
}

/// A 5-step pipeline killed mid-step at each step in turn resumes where it stopped, and every
/// step takes effect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_resumes_where_it_was_killed() {
    let Some((url, _store)) = fresh_store().await else {
        return;
    };
    idem_tests::resume::pipeline_resumes_where_it_was_killed(WORKER, &url).await;
}
