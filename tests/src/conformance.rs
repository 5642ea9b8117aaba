//! The store conformance suite: every scenario of the life of a call, written once, run against
//! every store (see `conformance_suite!`).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idem_runtime::record::{AttemptOutcome, Status};
use idem_runtime::store::ListFilter;
use idem_runtime::{current, Call, Error, Idem, OnConflict};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::backends::Backend;
use crate::unique_op;

/// The error type of the bodies under test.
#[derive(Debug)]
pub enum TestError {
    /// From idem.
    Idem(Error),
    /// From the body.
    Body(String),
}

impl From<Error> for TestError {
    fn from(e: Error) -> Self {
        TestError::Idem(e)
    }
}

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestError::Idem(e) => write!(f, "{e}"),
            TestError::Body(s) => write!(f, "body failed: {s}"),
        }
    }
}

/// A serializable error, for `cache_errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Declined {
    /// A definitive answer from the body.
    Declined(String),
    /// idem's error, as text.
    Idem(String),
}

impl From<Error> for Declined {
    fn from(e: Error) -> Self {
        Declined::Idem(e.to_string())
    }
}

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Starts `call` with a body that never ends and abandons it the way a crashed worker does: its
/// future is leaked (never polled again, never dropped, so nothing releases its claim) and its
/// heartbeat is off, so its lease runs out. (A call whose future is *dropped* releases its claim
/// at once: see `lifecycle.rs`.)
pub async fn crash_mid_body(idem: &Idem, call: Call) {
    let started = Arc::new(Notify::new());
    let body_started = started.clone();
    let mut call = Box::pin(idem.call(call.heartbeat(false), move || async move {
        body_started.notify_one();
        std::future::pending::<()>().await;
        Ok::<_, TestError>(String::new())
    }));
    tokio::select! {
        _ = &mut call => panic!("a body that never ends ended"),
        () = started.notified() => {}
    }
    std::mem::forget(call);
}

/// Starts `call` without a heartbeat, with a body that stalls until the returned `Notify` is
/// notified and then returns `value`: an attempt that outlives its lease (the seed-000 zombie).
/// Returns once the body runs.
pub async fn start_stalled(
    idem: &Idem,
    call: Call,
    value: &str,
) -> (
    tokio::task::JoinHandle<Result<String, TestError>>,
    Arc<Notify>,
) {
    let (started, proceed) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let task = {
        let (idem, call, value) = (idem.clone(), call.heartbeat(false), value.to_owned());
        let (started, proceed) = (started.clone(), proceed.clone());
        tokio::spawn(async move {
            idem.call(call, || async move {
                started.notify_one();
                proceed.notified().await;
                Ok::<_, TestError>(value)
            })
            .await
        })
    };
    started.notified().await;
    (task, proceed)
}

/// Runs `call` with a body that counts executions and returns `value`.
pub async fn counted(
    idem: &Idem,
    call: Call,
    runs: &AtomicUsize,
    value: &str,
) -> Result<String, TestError> {
    idem.call(call, || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok(value.to_string())
    })
    .await
}

/// Calls key `"k"` of `op` with a body that counts its runs and returns `"ran"`.
pub async fn count_call(idem: &Idem, op: &str, runs: &AtomicUsize) -> Result<String, TestError> {
    counted(idem, Call::new(op.to_owned()).key(&"k"), runs, "ran").await
}

/// 64 concurrent tasks on one key run the body once and all receive its value.
pub async fn one_key_64_tasks_runs_once(b: &Backend) {
    let op = unique_op("one_key_64");
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..64 {
        // Several handles: the store, not a handle, must arbitrate.
        let idem = b.worker(&format!("w{}", i % 4));
        let (op, runs) = (op.clone(), runs.clone());
        tasks.push(tokio::spawn(async move {
            idem.call(Call::new(op).key(&"the-key").lease(ms(2000)), || async {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(ms(100)).await;
                Ok::<_, TestError>(format!("value from task {i}"))
            })
            .await
            .unwrap()
        }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap());
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the body must run exactly once"
    );
    assert!(
        values.windows(2).all(|w| w[0] == w[1]),
        "all 64 callers get one value: {values:?}"
    );
}

/// A completed key replays; a different key runs.
pub async fn replay_returns_recorded_value(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("replay");
    let runs = AtomicUsize::new(0);
    let a = counted(
        &idem,
        Call::new(op.clone()).key(&("x", 1_u32)),
        &runs,
        "first",
    )
    .await
    .unwrap();
    let again = counted(
        &idem,
        Call::new(op.clone()).key(&("x", 1_u32)),
        &runs,
        "second",
    )
    .await
    .unwrap();
    let other = counted(
        &idem,
        Call::new(op.clone()).key(&("x", 2_u32)),
        &runs,
        "third",
    )
    .await
    .unwrap();
    assert_eq!(
        (a.as_str(), again.as_str(), other.as_str()),
        ("first", "first", "third")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let v2 = counted(
        &idem,
        Call::versioned(op, 2).key(&("x", 1_u32)),
        &runs,
        "v2",
    )
    .await
    .unwrap();
    assert_eq!(v2, "v2", "a new version is a fresh key space");
}

/// The seed-000 incident: an attempt that stalls past its lease (no heartbeat) is taken over;
/// its late completion is fenced and its caller ends with the winner's value.
pub async fn stalled_attempt_is_taken_over_and_fenced(b: &Backend) {
    let op = unique_op("stalled");
    let call = || Call::new(op.clone()).key(&"order-7").lease(ms(300));
    let (zombie, proceed) = start_stalled(&b.worker("zombie"), call(), "zombie's value").await;
    tokio::time::sleep(ms(450)).await; // the zombie's lease has expired

    let winner = b.worker("winner");
    let runs = AtomicUsize::new(0);
    let won = counted(&winner, call(), &runs, "winner's value")
        .await
        .unwrap();
    assert_eq!(won, "winner's value");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the winner took over and ran"
    );

    proceed.notify_one();
    let late = zombie.await.unwrap().unwrap();
    assert_eq!(
        late, "winner's value",
        "the fenced caller converges on the recorded value"
    );

    let key = call().key_value();
    let record = winner.record(&key).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Completed);
    assert_eq!(record.attempt, 2);
    let log = winner.attempts(&key).await.unwrap();
    let outcomes: Vec<_> = log.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(
        outcomes,
        [(1, AttemptOutcome::Fenced), (2, AttemptOutcome::Completed)]
    );
    assert_eq!(log[0].worker, "zombie");
    assert_eq!(log[1].worker, "winner");
    // The replay still serves the winner's value.
    let replay = counted(&winner, call(), &runs, "nope").await.unwrap();
    assert_eq!(replay, "winner's value");
}

/// A live body running 5x its lease is never taken over (the heartbeat renews it).
pub async fn live_body_outlasting_lease_is_never_taken_over(b: &Backend) {
    let op = unique_op("heartbeat");
    let lease = ms(200);
    let call = || Call::new(op.clone()).key(&"slow-llm-call").lease(lease);
    let runs = Arc::new(AtomicUsize::new(0));
    let owner = {
        let (idem, call, runs) = (b.worker("owner"), call(), runs.clone());
        tokio::spawn(async move {
            idem.call(call, || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(lease * 5).await;
                Ok::<_, TestError>("slow value".to_string())
            })
            .await
        })
    };
    let started = std::time::Instant::now();
    tokio::time::sleep(ms(50)).await;
    let other = b.worker("impatient");
    let (mut refusals, mut last_refusal) = (0, Duration::ZERO);
    while !owner.is_finished() {
        match counted(
            &other,
            call().on_conflict(OnConflict::Error),
            &runs,
            "stolen",
        )
        .await
        {
            Err(TestError::Idem(Error::InProgress { attempt: 1, .. })) => {
                refusals += 1;
                last_refusal = started.elapsed();
            }
            Ok(v) => {
                assert_eq!(v, "slow value", "only the owner's value may appear");
                break;
            }
            Err(e) => panic!("unexpected: {e}"),
        }
        tokio::time::sleep(ms(40)).await;
    }
    assert_eq!(owner.await.unwrap().unwrap(), "slow value");
    // In progress long after the first lease would have run out (timing-tolerant: a loaded
    // machine may manage only a few looks in the body's second).
    assert!(
        refusals >= 3 && last_refusal > lease * 3,
        "the key was reported in progress throughout ({refusals} times, the last after \
         {last_refusal:?})"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "never taken over");
}

/// A caller that vanishes mid-body (its future dropped, as in a crash) leaves a lease that
/// expires; the next caller takes over as attempt 2 and the log shows attempt 1 abandoned.
pub async fn crashed_attempt_is_taken_over_and_logged_abandoned(b: &Backend) {
    let op = unique_op("crashed");
    let call = || Call::new(op.clone()).key(&7_u64).lease(ms(250));
    let idem = b.worker("crashed");
    crash_mid_body(&idem, call()).await;

    let survivor = b.worker("survivor");
    let runs = AtomicUsize::new(0);
    let begun = std::time::Instant::now();
    let v = counted(&survivor, call(), &runs, "recovered")
        .await
        .unwrap();
    assert_eq!(v, "recovered");
    assert!(
        begun.elapsed() < Duration::from_secs(2),
        "taken over within about one lease"
    );
    let outcomes = crate::logged_outcomes(&survivor, &call().key_value()).await;
    assert_eq!(
        outcomes,
        [
            (1, AttemptOutcome::Abandoned),
            (2, AttemptOutcome::Completed)
        ]
    );
}

/// A body error marks the record failed; the next call runs again.
pub async fn body_error_is_retried(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("error");
    let call = || Call::new(op.clone()).key(&"flaky");
    let runs = AtomicUsize::new(0);
    let first: Result<String, TestError> = idem
        .call(call(), || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Err(TestError::Body("connection reset".into()))
        })
        .await;
    assert!(matches!(first, Err(TestError::Body(_))));
    let record = idem.record(&call().key_value()).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Failed);
    assert_eq!(
        record.error.as_deref(),
        Some("body failed: connection reset")
    );
    let second = counted(&idem, call(), &runs, "ok now").await.unwrap();
    assert_eq!(second, "ok now");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let log = idem.attempts(&call().key_value()).await.unwrap();
    assert_eq!(log[0].outcome, AttemptOutcome::Failed);
    assert_eq!(
        log[0].error.as_deref(),
        Some("body failed: connection reset")
    );
    assert_eq!(log[1].outcome, AttemptOutcome::Completed);
}

/// `cache_errors`: the error is recorded and replayed; the body does not run again.
pub async fn cache_errors_replays_the_error(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("cache_errors");
    let call = || Call::new(op.clone()).key(&"card-4242");
    let runs = AtomicUsize::new(0);
    for _ in 0..3 {
        let r: Result<u32, Declined> = idem
            .call_caching_errors(call(), || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Err(Declined::Declined("insufficient funds".into()))
            })
            .await;
        assert_eq!(r, Err(Declined::Declined("insufficient funds".into())));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // A call site without cache_errors cannot replay an error value: a typed error, no re-run.
    let plain = counted(&idem, call(), &runs, "x").await;
    assert!(
        matches!(plain, Err(TestError::Idem(Error::Corrupt { .. }))),
        "{plain:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The same key with a different `verify` fingerprint is `KeyReuse`, body not run.
pub async fn fingerprint_mismatch_is_key_reuse(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("verify");
    let call = |amount: u64| Call::new(op.clone()).key(&"idem-key-123").verify(&amount);
    let runs = AtomicUsize::new(0);
    assert_eq!(
        counted(&idem, call(100), &runs, "charged 100")
            .await
            .unwrap(),
        "charged 100"
    );
    let reused = counted(&idem, call(999), &runs, "charged 999").await;
    match reused {
        Err(TestError::Idem(e @ Error::KeyReuse { .. })) => {
            assert!(
                e.to_string().contains(&op),
                "the message names the operation: {e}"
            );
        }
        other => panic!("expected KeyReuse, got {other:?}"),
    }
    assert_eq!(
        counted(&idem, call(100), &runs, "x").await.unwrap(),
        "charged 100"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The check also holds while the first attempt is still running.
    let running_op = unique_op("verify_running");
    let gate = Arc::new(Notify::new());
    let owner = {
        let (idem, gate) = (b.worker("owner"), gate.clone());
        let call = Call::new(running_op.clone())
            .key(&1_u8)
            .verify(&"payload A");
        tokio::spawn(async move {
            idem.call(call, || async move {
                gate.notified().await;
                Ok::<_, TestError>(1_u32)
            })
            .await
        })
    };
    tokio::time::sleep(ms(50)).await;
    let clash: Result<u32, TestError> = idem
        .call(
            Call::new(running_op).key(&1_u8).verify(&"payload B"),
            || async { Ok(2) },
        )
        .await;
    assert!(
        matches!(clash, Err(TestError::Idem(Error::KeyReuse { .. }))),
        "{clash:?}"
    );
    gate.notify_one();
    assert_eq!(owner.await.unwrap().unwrap(), 1);
}

/// A completed record lives for `ttl`, then the key runs again as a new attempt.
pub async fn ttl_expiry_runs_again(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("ttl");
    let call = || Call::new(op.clone()).key(&"daily-digest").ttl(ms(300));
    let runs = AtomicUsize::new(0);
    assert_eq!(counted(&idem, call(), &runs, "one").await.unwrap(), "one");
    assert_eq!(counted(&idem, call(), &runs, "two").await.unwrap(), "one");
    tokio::time::sleep(ms(450)).await;
    assert_eq!(
        counted(&idem, call(), &runs, "three").await.unwrap(),
        "three"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let record = idem.record(&call().key_value()).await.unwrap().unwrap();
    assert_eq!(record.attempt, 2);
}

/// Purge deletes expired records in batches; attempt numbers never go backwards across it.
pub async fn purge_deletes_in_batches_and_attempts_never_go_back(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("purge");
    let runs = AtomicUsize::new(0);
    let call = |i: u32| Call::new(op.clone()).key(&i).ttl(ms(100));
    for i in 0..25 {
        counted(&idem, call(i), &runs, "v").await.unwrap();
    }
    // Push key 0 to attempt 3 first.
    for _ in 0..2 {
        tokio::time::sleep(ms(150)).await;
        counted(&idem, call(0), &runs, "v").await.unwrap();
    }
    assert_eq!(
        idem.record(&call(0).key_value())
            .await
            .unwrap()
            .unwrap()
            .attempt,
        3
    );
    // A long-lived record must survive the purge.
    let keep = Call::new(op.clone())
        .key(&"keep")
        .ttl(Duration::from_secs(3600));
    counted(&idem, keep, &runs, "kept").await.unwrap();
    tokio::time::sleep(ms(150)).await;

    let first_batch = idem
        .store()
        .purge_expired(10, Duration::from_secs(3600))
        .await
        .unwrap();
    let rest = idem
        .purge_expired(10, Duration::from_secs(3600))
        .await
        .unwrap();
    if b.store.backend() == "memory" {
        // The memory store drops expired records itself, at every claim: the claims above
        // already took the expired ones; purge finds only key 0, which expired since.
        assert!(first_batch + rest <= 1, "{first_batch} + {rest}");
    } else if b.store.backend() == "redis" {
        // Redis deletes finished records itself, at their expiry (`PEXPIREAT`): purge has
        // nothing left to delete (the checks below prove they are gone).
        assert_eq!(first_batch + rest, 0, "{first_batch} + {rest}");
    } else {
        assert_eq!(first_batch, 10, "one batch deletes at most `batch` rows");
        assert!(rest >= 15, "the loop purges the rest ({rest})");
    }
    for i in 1..25 {
        assert!(idem.record(&call(i).key_value()).await.unwrap().is_none());
    }
    assert!(idem.record(&call(0).key_value()).await.unwrap().is_none());
    let kept = Call::new(op.clone()).key(&"keep").key_value();
    assert!(
        idem.record(&kept).await.unwrap().is_some(),
        "unexpired records stay"
    );

    counted(&idem, call(0), &runs, "again").await.unwrap();
    let attempt = idem
        .record(&call(0).key_value())
        .await
        .unwrap()
        .unwrap()
        .attempt;
    assert!(
        attempt > 3,
        "attempt numbers never go backwards across purge (got {attempt})"
    );
}

/// `forget` makes the next call run again, with a higher attempt number.
pub async fn forget_runs_again_with_a_higher_attempt(b: &Backend) {
    let idem = b.cached_worker("w");
    let op = unique_op("forget");
    let call = || Call::new(op.clone()).key(&"k");
    let runs = AtomicUsize::new(0);
    counted(&idem, call(), &runs, "one").await.unwrap();
    assert!(idem.forget(&call().key_value()).await.unwrap());
    assert!(
        !idem.forget(&call().key_value()).await.unwrap(),
        "already gone"
    );
    assert_eq!(counted(&idem, call(), &runs, "two").await.unwrap(), "two");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let record = idem.record(&call().key_value()).await.unwrap().unwrap();
    assert!(
        record.attempt >= 2,
        "attempt {} after forget",
        record.attempt
    );
}

/// A snapshot that does not decode as the return type is a typed error naming the
/// operation and key; no panic and no silent re-run.
pub async fn wrong_type_snapshot_is_a_typed_error(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("wrong_type");
    let call = || Call::new(op.clone()).key(&"k");
    let runs = AtomicUsize::new(0);
    counted(&idem, call(), &runs, "a string").await.unwrap();
    let r: Result<u64, TestError> = idem
        .call(call(), || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(5)
        })
        .await;
    match r {
        Err(TestError::Idem(e @ Error::SnapshotDecode { .. })) => {
            let text = e.to_string();
            assert!(text.contains(&op), "names the op: {text}");
            assert!(
                text.contains(&call().key_value().to_hex()),
                "names the key: {text}"
            );
        }
        other => panic!("expected SnapshotDecode, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "no silent re-run");
}

/// A panic is a failure: the claim is released and the panic resumes.
pub async fn panic_releases_the_claim_and_resumes(b: &Backend) {
    let op = unique_op("panic");
    let call = || Call::new(op.clone()).key(&"boom");
    let idem = b.worker("w");
    let joined = tokio::spawn({
        let (idem, call) = (idem.clone(), call());
        async move {
            idem.call(call, || async {
                if std::hint::black_box(true) {
                    panic!("model returned garbage");
                }
                Ok::<u8, TestError>(0)
            })
            .await
        }
    })
    .await;
    let panic = joined.expect_err("the panic resumes in the caller");
    assert!(panic.is_panic());
    let record = idem.record(&call().key_value()).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Failed);
    assert!(record.error.unwrap().contains("model returned garbage"));
    // Released: the next call runs at once, without waiting for a lease.
    let runs = AtomicUsize::new(0);
    let begun = std::time::Instant::now();
    let v: Result<u8, TestError> = idem
        .call(call(), || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        })
        .await;
    assert_eq!(v.unwrap(), 1);
    assert!(begun.elapsed() < ms(1000));
}

/// `on_conflict = error` returns `InProgress` at once while another attempt runs.
pub async fn on_conflict_error_returns_in_progress(b: &Backend) {
    let op = unique_op("conflict_error");
    let call = || Call::new(op.clone()).key(&"k");
    let gate = Arc::new(Notify::new());
    let owner = {
        let (idem, gate, call) = (b.worker("owner"), gate.clone(), call());
        tokio::spawn(async move {
            idem.call(call, || async move {
                gate.notified().await;
                Ok::<_, TestError>("done".to_string())
            })
            .await
        })
    };
    tokio::time::sleep(ms(50)).await;
    let other = b.worker("other");
    let runs = AtomicUsize::new(0);
    let begun = std::time::Instant::now();
    let r = counted(&other, call().on_conflict(OnConflict::Error), &runs, "x").await;
    match r {
        Err(TestError::Idem(e @ Error::InProgress { .. })) => {
            assert!(e.to_string().contains(&op), "{e}");
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
    assert!(begun.elapsed() < ms(500), "at once");
    gate.notify_one();
    assert_eq!(owner.await.unwrap().unwrap(), "done");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// `on_conflict = wait` is bounded by `wait`, then `InProgress`.
pub async fn bounded_wait_gives_up_with_in_progress(b: &Backend) {
    let op = unique_op("bounded_wait");
    let call = || Call::new(op.clone()).key(&"k");
    let gate = Arc::new(Notify::new());
    let owner = {
        let (idem, gate, call) = (b.worker("owner"), gate.clone(), call());
        tokio::spawn(async move {
            idem.call(call, || async move {
                gate.notified().await;
                Ok::<_, TestError>("done".to_string())
            })
            .await
        })
    };
    tokio::time::sleep(ms(50)).await;
    let runs = AtomicUsize::new(0);
    let begun = std::time::Instant::now();
    let r = counted(&b.worker("waiter"), call().wait(ms(300)), &runs, "x").await;
    let waited = begun.elapsed();
    assert!(
        matches!(r, Err(TestError::Idem(Error::InProgress { .. }))),
        "{r:?}"
    );
    assert!(waited >= ms(300) && waited < ms(1500), "waited {waited:?}");
    gate.notify_one();
    owner.await.unwrap().unwrap();
}

/// A waiting duplicate replays the owner's outcome as soon as it is recorded: in the same
/// process it waits notified, not polled, and returns right after the owner's body ends.
pub async fn waiter_replays_the_owners_outcome(b: &Backend) {
    let op = unique_op("waiter");
    let call = || Call::new(op.clone()).key(&"k");
    let finished = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let owner = {
        let (idem, call, finished) = (b.worker("owner"), call(), finished.clone());
        tokio::spawn(async move {
            idem.call(call, || async move {
                tokio::time::sleep(ms(300)).await;
                *finished.lock().unwrap() = Some(std::time::Instant::now());
                Ok::<_, TestError>("owner's".to_string())
            })
            .await
        })
    };
    tokio::time::sleep(ms(50)).await;
    let runs = AtomicUsize::new(0);
    let v = counted(&b.worker("dup"), call(), &runs, "dup's")
        .await
        .unwrap();
    let returned = std::time::Instant::now();
    assert_eq!(v, "owner's");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    owner.await.unwrap().unwrap();
    let late = returned.duration_since(finished.lock().unwrap().unwrap());
    // Polling (the old way) answered up to 250 ms late; a wake-up answers in milliseconds.
    assert!(
        late < ms(150),
        "returned {late:?} after the owner's body ended"
    );
}

/// An operator's release makes the next call run at once; the log says `released`.
pub async fn release_lets_the_next_call_run(b: &Backend) {
    let op = unique_op("release");
    let call = || {
        Call::new(op.clone())
            .key(&"stuck")
            .lease(Duration::from_secs(600))
    };
    let idem = b.worker("stuck-worker");
    crash_mid_body(&idem, call()).await;
    let key = call().key_value();
    assert!(idem.store().release(&key).await.unwrap());
    assert!(
        !idem.store().release(&key).await.unwrap(),
        "nothing left to release"
    );
    let runs = AtomicUsize::new(0);
    let v = counted(&b.worker("next"), call(), &runs, "fresh")
        .await
        .unwrap();
    assert_eq!(v, "fresh");
    let log = idem.attempts(&key).await.unwrap();
    assert_eq!(log[0].outcome, AttemptOutcome::Released);
    assert_eq!(log[1].outcome, AttemptOutcome::Completed);
}

/// `current()` inside the body gives its op, key and attempt; outside, nothing.
pub async fn current_tells_the_body_its_key_and_attempt(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("current");
    let call = || Call::new(op.clone()).key(&"k");
    assert!(current().is_none());
    let _: Result<(), TestError> = idem
        .call(call(), || async {
            Err(TestError::Body("first try fails".into()))
        })
        .await;
    let seen: (String, String, u64) = idem
        .call(call(), || async {
            let info = current().expect("inside a body");
            Ok::<_, TestError>((info.op.to_string(), info.idempotency_key(), info.attempt))
        })
        .await
        .unwrap();
    assert_eq!(seen, (op.clone(), call().key_value().to_hex(), 2));
}

/// `list` filters by operation and status, newest first.
pub async fn list_filters_by_op_and_status(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("list");
    let runs = AtomicUsize::new(0);
    for i in 0..3_u32 {
        counted(&idem, Call::new(op.clone()).key(&i), &runs, "v")
            .await
            .unwrap();
        tokio::time::sleep(ms(5)).await;
    }
    let _: Result<String, TestError> = idem
        .call(Call::new(op.clone()).key(&99_u32), || async {
            Err(TestError::Body("no".into()))
        })
        .await;
    let all = idem
        .store()
        .list(&ListFilter {
            op: Some(op.clone()),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(
        all.windows(2).all(|w| w[0].updated_at >= w[1].updated_at),
        "newest first"
    );
    let failed = idem
        .store()
        .list(&ListFilter {
            op: Some(op.clone()),
            status: Some(Status::Failed),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].key,
        Call::new(op.clone()).key(&99_u32).key_value()
    );
    let limited = idem
        .store()
        .list(&ListFilter {
            op: Some(op),
            limit: Some(2),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);
}

/// With the snapshot cache on, a replay does not reach the store: when nothing tells the cache
/// of other processes' changes (SQLite, or a PostgreSQL listener that is down), it keeps
/// replaying the value even after another handle forgets the key, until the staleness bound.
pub async fn cached_replay_skips_the_store(b: &Backend) {
    let op = unique_op("cached");
    let call = || Call::new(op.clone()).key(&"k");
    let cached = Idem::builder(Arc::new(crate::wrapped::Wrapped::unwatched(
        b.store.clone(),
    )))
    .cache_staleness(ms(400))
    .worker("cached")
    .build();
    let runs = AtomicUsize::new(0);
    assert_eq!(counted(&cached, call(), &runs, "one").await.unwrap(), "one");
    // Another worker forgets the key behind this handle's back.
    assert!(b
        .worker("operator")
        .forget(&call().key_value())
        .await
        .unwrap());
    assert_eq!(
        counted(&cached, call(), &runs, "two").await.unwrap(),
        "one",
        "served from cache"
    );
    tokio::time::sleep(ms(500)).await;
    assert_eq!(
        counted(&cached, call(), &runs, "three").await.unwrap(),
        "three",
        "bounded staleness"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
