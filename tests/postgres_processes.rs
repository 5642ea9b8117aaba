//! Several OS processes on one PostgreSQL database: exactly-once execution across 8 processes,
//! takeover after kill -9, and workers whose clocks are 5 minutes off.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_runtime::record::AttemptOutcome;
use idem_runtime::store::postgres::PostgresStore;
use idem_runtime::{Call, Error, Idem, OnConflict};
use idem_tests::backends::{fresh_postgres_schema, postgres_store, postgres_test_url};
use idem_tests::effects::Effects;
use idem_tests::takeover::{
    assert_killed_stream_is_taken_over, assert_killed_worker_is_taken_over, spawn_started,
};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const WORKER: &str = env!("CARGO_BIN_EXE_idem-test-worker");

/// A fresh schema on the test server, migrated; `None` (after a loud SKIPPED, or a panic in CI)
/// when the server is unreachable.
async fn fresh_store() -> Option<(String, PostgresStore)> {
    let schema = fresh_postgres_schema();
    let store = postgres_store(&schema, |b| b).await?;
    Some((schema, store))
}

/// A 5-step pipeline killed mid-step at each step in turn resumes where it stopped, and every
/// step takes effect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_resumes_where_it_was_killed() {
    let Some((schema, _store)) = fresh_store().await else {
        return;
    };
    let url = postgres_test_url(&schema, 2);
    idem_tests::resume::pipeline_resumes_where_it_was_killed(WORKER, &url).await;
}

/// 8 processes x 32 tasks, 2,000 keys each requested by every process: exactly 2,000
/// executions, and every caller received the value of its key's single execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_2000_keys_execute_each_once() {
    let Some((schema, _store)) = fresh_store().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = postgres_test_url(&schema, 4);
    let op = idem_tests::unique_op("pg_processes");
    let files: Vec<_> = (0..8)
        .map(|i| dir.path().join(format!("effects-{i}.txt")))
        .collect();
    let started = Instant::now();
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            Command::new(WORKER)
                .args(["many", &url, &op, "2000", "32", f.to_str().unwrap()])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().await.unwrap().success(), "a worker failed");
    }
    eprintln!("8 processes x 2,000 keys: {:?}", started.elapsed());
    Effects::read(&files).assert_exactly_once(2000, 8);
}

/// Starts `idem-test-worker hang` on `key`, with the process's wall clock shifted by
/// `skew_secs` (0: no shift); its stdout lines (`started` once its body runs).
async fn hang_worker(
    schema: &str,
    op: &str,
    key: &str,
    lease_ms: u64,
    skew_secs: i64,
) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut cmd = Command::new(WORKER);
    cmd.args([
        "hang",
        &postgres_test_url(schema, 2),
        op,
        key,
        &lease_ms.to_string(),
    ])
    .stdout(Stdio::piped())
    .kill_on_drop(true);
    if skew_secs != 0 {
        cmd.env("LD_PRELOAD", skew_library())
            .env("IDEM_TEST_CLOCK_SKEW_SECS", skew_secs.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

async fn expect_started(lines: &mut Lines<BufReader<ChildStdout>>, within: Duration) -> Duration {
    let begun = Instant::now();
    let line = tokio::time::timeout(within, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("the worker did not start its body within {within:?}"))
        .unwrap();
    assert_eq!(line.as_deref(), Some("started"));
    begun.elapsed()
}

fn handle(store: PostgresStore, worker: &str) -> Idem {
    Idem::builder(Arc::new(store))
        .cache_capacity(0)
        .worker(worker)
        .build()
}

/// kill -9 of a worker mid-body: its heartbeat held the key while it lived; after one lease
/// another worker takes over, and the attempts log shows the abandoned attempt. (The fencing of
/// a stalled attempt's late completion is the conformance scenario
/// `stalled_attempt_is_taken_over_and_fenced`, which runs on this store too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_is_taken_over_after_one_lease() {
    let Some((schema, store)) = fresh_store().await else {
        return;
    };
    let op = idem_tests::unique_op("pg_kill9");
    let lease_ms = 500;
    let (child, mut lines) = hang_worker(&schema, &op, "job-1", lease_ms, 0).await;
    expect_started(&mut lines, Duration::from_secs(30)).await;

    let idem = handle(store, "survivor");
    assert_killed_worker_is_taken_over(child, &idem, &op, lease_ms).await;
}

/// kill -9 of a worker mid-stream: a duplicate following it (woken by NOTIFY) gets the chunks
/// journaled so far, then `StreamInterrupted`; the next call takes over and generates anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_stream_is_taken_over_after_one_lease() {
    let Some((schema, store)) = fresh_store().await else {
        return;
    };
    let op = idem_tests::unique_op("pg_stream_kill9");
    let lease_ms = 500;
    let url = postgres_test_url(&schema, 2);
    let child = spawn_started(
        WORKER,
        &["stream-hang", &url, &op, "stream-1", &lease_ms.to_string()],
    )
    .await;
    let idem = handle(store, "survivor");
    assert_killed_stream_is_taken_over(child, &idem, &op, lease_ms).await;
}

/// An `LD_PRELOAD` library that shifts the process's wall clock (`clock_gettime(CLOCK_REALTIME)`,
/// `gettimeofday`, `time`: what `std::time::SystemTime` and every clock-reading library use) by
/// `IDEM_TEST_CLOCK_SKEW_SECS`. Monotonic clocks (tokio's timers) are untouched.
fn skew_library() -> PathBuf {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("idem-clock-skew-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("skew.c");
        std::fs::write(&src, SKEW_C).unwrap();
        let lib = dir.join("libidemskew.so");
        let status = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&lib)
            .arg(&src)
            .arg("-ldl")
            .status()
            .expect("a C compiler (cc) builds the clock-skew library");
        assert!(status.success(), "cc failed");
        lib
    })
    .clone()
}

const SKEW_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <sys/time.h>
static long skew(void) { const char *s = getenv("IDEM_TEST_CLOCK_SKEW_SECS"); return s ? atol(s) : 0; }
int clock_gettime(clockid_t id, struct timespec *tp) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(id, tp);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) tp->tv_sec += skew();
    return r;
}
int gettimeofday(struct timeval *tv, void *tz) {
    static int (*real)(struct timeval *, void *);
    if (!real) real = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
    int r = real(tv, tz);
    if (r == 0 && tv) tv->tv_sec += skew();
    return r;
}
time_t time(time_t *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}
"#;

/// The shim really moves a process's clock (so the tests below would catch a store that used
/// the worker's clock).
fn assert_skew_works(skew_secs: i64) {
    let out = std::process::Command::new("date")
        .arg("+%s")
        .env("LD_PRELOAD", skew_library())
        .env("IDEM_TEST_CLOCK_SKEW_SECS", skew_secs.to_string())
        .output()
        .unwrap();
    let skewed: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    assert!(
        (skewed - now - skew_secs).abs() <= 2,
        "the clock shim works: {skewed} vs {now}"
    );
}

/// Leases use the server's clock. Workers whose wall clocks are 5 minutes off (an
/// `LD_PRELOAD` shim shifts them) neither steal a live lease nor keep a dead one. Each case
/// fails if the store computed or compared leases with the worker's clock:
/// 1. a worker 5 min *behind* holds a key: with its clock, its lease would be 5 min in the past
///    and a correct-clock worker would steal it;
/// 2. a worker 5 min *ahead* tries a key a live correct-clock worker holds: with its clock, the
///    holder's lease would look 5 min expired and it would steal it;
/// 3. a worker 5 min *ahead* holds a key and is killed: with its clock, its lease would run
///    5 min past its death, and nobody could take over within one lease;
/// 4. a worker 5 min *behind* meets a dead correct-clock worker's lease: with its clock, that
///    lease would look 5 min from expiring, and it would wait instead of taking over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_worker_clocks_neither_steal_nor_keep_leases() {
    let Some((schema, store)) = fresh_store().await else {
        return;
    };
    const FIVE_MIN: i64 = 300;
    assert_skew_works(FIVE_MIN);
    assert_skew_works(-FIVE_MIN);
    let idem = handle(store, "true-clock");
    let lease_ms = 600;
    let lease = Duration::from_millis(lease_ms);

    // 1. A holder 5 minutes behind keeps its live lease.
    let op = idem_tests::unique_op("skew_behind_holds");
    let (mut holder, mut lines) = hang_worker(&schema, &op, "k", lease_ms, -FIVE_MIN).await;
    expect_started(&mut lines, Duration::from_secs(30)).await;
    for _ in 0..4 {
        tokio::time::sleep(lease / 2).await;
        let r: Result<String, Error> = idem
            .call(
                Call::new(op.clone())
                    .key(&"k")
                    .lease(lease)
                    .on_conflict(OnConflict::Error),
                || async { Ok("stolen".into()) },
            )
            .await;
        assert!(
            matches!(r, Err(Error::InProgress { attempt: 1, .. })),
            "case 1: {r:?}"
        );
    }
    holder.start_kill().unwrap();
    holder.wait().await.unwrap();

    // 2. A challenger 5 minutes ahead does not steal a live holder's lease.
    let op = idem_tests::unique_op("skew_ahead_steals");
    let gate = Arc::new(tokio::sync::Notify::new());
    let owner = {
        let (idem, op, gate) = (idem.clone(), op.clone(), gate.clone());
        tokio::spawn(async move {
            idem.call(Call::new(op).key(&"k").lease(lease), || async move {
                gate.notified().await;
                Ok::<_, Error>("owner's".to_string())
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut challenger, mut lines) = hang_worker(&schema, &op, "k", lease_ms, FIVE_MIN).await;
    let stole = tokio::time::timeout(lease * 4, lines.next_line()).await;
    assert!(
        stole.is_err(),
        "case 2: the skewed worker started the body of a live lease: {stole:?}"
    );
    gate.notify_one();
    assert_eq!(owner.await.unwrap().unwrap(), "owner's");
    // The challenger (waiting) now replays the owner's value and exits without running.
    let status = tokio::time::timeout(Duration::from_secs(10), challenger.wait()).await;
    assert!(
        status.is_ok_and(|s| s.unwrap().success()),
        "case 2: the challenger replayed and exited"
    );
    assert!(
        lines.next_line().await.unwrap().is_none(),
        "case 2: the challenger never ran the body"
    );

    // 3. A holder 5 minutes ahead that dies is taken over within one lease.
    let op = idem_tests::unique_op("skew_ahead_dies");
    let (mut holder, mut lines) = hang_worker(&schema, &op, "k", lease_ms, FIVE_MIN).await;
    expect_started(&mut lines, Duration::from_secs(30)).await;
    holder.start_kill().unwrap();
    holder.wait().await.unwrap();
    let killed_at = Instant::now();
    let v: String = idem
        .call(Call::new(op.clone()).key(&"k").lease(lease), || async {
            Ok::<_, Error>("taken over".into())
        })
        .await
        .unwrap();
    assert_eq!(v, "taken over");
    let took = killed_at.elapsed();
    assert!(
        took <= lease + Duration::from_secs(1),
        "case 3: taken over within one lease: {took:?}"
    );

    // 4. A challenger 5 minutes behind takes over a dead holder's lease within one lease.
    let op = idem_tests::unique_op("skew_behind_takes_over");
    idem_tests::conformance::crash_mid_body(&idem, Call::new(op.clone()).key(&"k").lease(lease))
        .await;
    let (mut challenger, mut lines) = hang_worker(&schema, &op, "k", lease_ms, -FIVE_MIN).await;
    let took = expect_started(&mut lines, lease + Duration::from_secs(5)).await;
    assert!(
        took <= lease + Duration::from_secs(2),
        "case 4: took over within about one lease: {took:?}"
    );
    challenger.start_kill().unwrap();
    challenger.wait().await.unwrap();
    let outcomes = idem_tests::logged_outcomes(&idem, &Call::new(op).key(&"k").key_value()).await;
    assert_eq!(
        outcomes[0],
        (1, AttemptOutcome::Abandoned),
        "case 4: {outcomes:?}"
    );
    assert_eq!(outcomes[1].0, 2);
}

/// kill -9 of a worker in the middle of a PostgreSQL transactional step, after its write: the
/// server rolls the transaction back (no row, no claim), and the next worker runs the step at
/// once, without waiting for a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_transactional_step_leaves_nothing() {
    use idem_runtime::store::postgres::Step;
    let Some((schema, store)) = fresh_store().await else {
        return;
    };
    let saved = format!("\"{schema}\".saved");
    sqlx::query(&format!("CREATE TABLE {saved} (k text NOT NULL)"))
        .execute(store.pool())
        .await
        .unwrap();
    let op = idem_tests::unique_op("pg_step_kill9");
    let url = postgres_test_url(&schema, 2);
    let mut child =
        idem_tests::takeover::spawn_started(WORKER, &["step-hang", &url, &op, "order-1"]).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let begun = Instant::now();
    let call = Call::new(op.clone())
        .key(&"order-1")
        .lease(Duration::from_secs(30));
    match store.begin_step::<i64>(call, "survivor").await.unwrap() {
        Step::Claimed(mut tx) => {
            assert_eq!(tx.attempt(), 1, "the killed attempt left no record");
            sqlx::query(&format!("INSERT INTO {saved} (k) VALUES ('order-1')"))
                .execute(tx.conn())
                .await
                .unwrap();
            tx.commit(&1_i64).await.unwrap();
        }
        Step::Replayed(_) => panic!("nothing was recorded, so the step must run"),
    }
    assert!(
        begun.elapsed() < Duration::from_secs(10),
        "no 30 s lease to wait for: {:?}",
        begun.elapsed()
    );
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {saved}"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1, "only the survivor's row was committed");
}
