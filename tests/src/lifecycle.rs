//! Conformance scenarios for a call's whole life at its edges: a call dropped mid-body or
//! mid-write, a lost lease, notified waiting, which errors are recorded, error types that cannot
//! hold idem's errors, results that cannot be recorded. Run on every store by
//! `conformance_suite!`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_runtime::record::{AttemptOutcome, Status};
use idem_runtime::{current, Call, CallError, Error, Idem, OnConflict};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::backends::Backend;
use crate::conformance::{counted, start_stalled, TestError};
use crate::unique_op;
use crate::wrapped::Wrapped;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Starts `call` on `idem` with a body that signals its start and then waits for ever; returns
/// the call's task once the body runs.
async fn start_hanging(
    idem: &Idem,
    call: Call,
) -> tokio::task::JoinHandle<Result<String, TestError>> {
    let started = Arc::new(Notify::new());
    let body_started = started.clone();
    let idem = idem.clone();
    let task = tokio::spawn(async move {
        idem.call(call, move || async move {
            body_started.notify_one();
            std::future::pending::<()>().await;
            Ok::<_, TestError>(String::new())
        })
        .await
    });
    started.notified().await;
    task
}

/// A call dropped while its body runs (a timeout around it) releases its claim at once: a
/// duplicate that was waiting starts its own attempt right away, not after the 10-minute lease,
/// and the log says `cancelled`.
pub async fn dropped_call_releases_its_claim_at_once(b: &Backend) {
    let op = unique_op("dropped");
    let call = || {
        Call::new(op.clone())
            .key(&"k")
            .lease(Duration::from_secs(600))
    };
    let owner = start_hanging(&b.worker("owner"), call()).await;

    let duplicate = {
        let idem = b.worker("duplicate");
        let call = call();
        tokio::spawn(async move {
            idem.call(call, || async { Ok::<_, TestError>("second".to_string()) })
                .await
        })
    };
    tokio::time::sleep(ms(100)).await; // the duplicate is waiting for the owner
    let dropped_at = Instant::now();
    owner.abort(); // the owner's future is dropped mid-body
    let v = tokio::time::timeout(Duration::from_secs(10), duplicate)
        .await
        .expect("the duplicate ran long before the 600 s lease expired")
        .unwrap()
        .unwrap();
    let took = dropped_at.elapsed();
    assert_eq!(v, "second");
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} after the drop"
    );

    let key = call().key_value();
    let outcomes = crate::logged_outcomes(&b.worker("operator"), &key).await;
    assert_eq!(
        outcomes,
        [
            (1, AttemptOutcome::Cancelled),
            (2, AttemptOutcome::Completed)
        ]
    );
}

/// A call dropped after its body returned, while its outcome was being written: the outcome is
/// still recorded (the paid result is never discarded), and the next call replays it.
pub async fn dropped_during_the_write_still_records(b: &Backend) {
    let op = unique_op("dropped_writing");
    let call = || Call::new(op.clone()).key(&"k");
    let slow = Idem::builder(Arc::new(Wrapped::slow_complete(b.store.clone(), ms(300))))
        .cache_capacity(0)
        .build();
    let runs = AtomicUsize::new(0);
    let cut = tokio::time::timeout(ms(100), counted(&slow, call(), &runs, "paid")).await;
    assert!(cut.is_err(), "dropped while the completion was in flight");
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let worker = b.worker("next");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let record = worker.record(&call().key_value()).await.unwrap().unwrap();
        if record.status == Status::Completed {
            break;
        }
        assert!(Instant::now() < deadline, "never recorded: {record:?}");
        tokio::time::sleep(ms(20)).await;
    }
    let again = counted(&worker, call(), &runs, "paid twice").await.unwrap();
    assert_eq!(again, "paid");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "replayed, not re-run");
}

/// A fenced attempt (it stalled past its lease and was taken over) whose body ends while the new
/// owner still runs waits for the new owner notified, and returns right after it.
pub async fn fenced_caller_returns_right_after_the_new_owner(b: &Backend) {
    let op = unique_op("fenced_notified");
    let call = || Call::new(op.clone()).key(&"k").lease(ms(300));
    let (zombie, proceed) = start_stalled(&b.worker("zombie"), call(), "zombie's").await;
    tokio::time::sleep(ms(450)).await; // the zombie's lease expired
    let finished = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let winner = {
        let idem = b.worker("winner");
        let (call, finished) = (call(), finished.clone());
        tokio::spawn(async move {
            idem.call(call, || async move {
                tokio::time::sleep(ms(400)).await;
                *finished.lock().unwrap() = Some(Instant::now());
                Ok::<_, TestError>("winner's".to_string())
            })
            .await
        })
    };
    tokio::time::sleep(ms(100)).await; // the winner runs
    proceed.notify_one(); // the zombie's body ends; its completion is fenced
    let late = zombie.await.unwrap().unwrap();
    let returned = Instant::now();
    assert_eq!(
        late, "winner's",
        "the fenced caller converged on the new owner's value"
    );
    assert_eq!(winner.await.unwrap().unwrap(), "winner's");
    let after = returned.duration_since(finished.lock().unwrap().unwrap());
    assert!(
        after < ms(150),
        "returned {after:?} after the new owner's body ended"
    );
}

/// The body of an attempt that loses its lease (an operator released it) sees it through
/// `current()`: a flag and a future.
pub async fn lost_lease_is_visible_to_the_body(b: &Backend) {
    let op = unique_op("lease_visible");
    let call = || Call::new(op.clone()).key(&"k").lease(ms(300));
    let released = Arc::new(Notify::new());
    let task = {
        let idem = b.worker("owner");
        let (call, released) = (call(), released.clone());
        tokio::spawn(async move {
            idem.call(call, || async move {
                let me = current().unwrap();
                assert!(!me.lease_lost());
                released.notify_one();
                tokio::time::timeout(Duration::from_secs(10), me.on_lease_lost())
                    .await
                    .map_err(|_| TestError::Body("the lease loss was never signalled".into()))?;
                assert!(me.lease_lost());
                Ok::<_, TestError>("saw it".to_string())
            })
            .await
        })
    };
    released.notified().await;
    let key = call().key_value();
    assert!(b.worker("operator").store().release(&key).await.unwrap());
    // Its completion is fenced; the released record holds nothing, so its own value is all
    // there is.
    assert_eq!(task.await.unwrap().unwrap(), "saw it");
}

/// With `abort_on_lease_loss`, the body is dropped the moment the lease is lost, and the call
/// says so when there is no outcome to converge on.
pub async fn lost_lease_can_abort_the_body(b: &Backend) {
    let op = unique_op("lease_abort");
    let call = || {
        Call::new(op.clone())
            .key(&"k")
            .lease(ms(300))
            .abort_on_lease_loss(true)
    };
    let owner = start_hanging(&b.worker("owner"), call()).await;
    let key = call().key_value();
    let released_at = Instant::now();
    assert!(b.worker("operator").store().release(&key).await.unwrap());
    let outcome = tokio::time::timeout(Duration::from_secs(10), owner)
        .await
        .expect("the body was aborted")
        .unwrap();
    assert!(
        matches!(
            outcome,
            Err(TestError::Idem(Error::LeaseLost { attempt: 1, .. }))
        ),
        "{outcome:?}"
    );
    // Noticed at the next heartbeat (a third of the lease).
    assert!(released_at.elapsed() < Duration::from_secs(2));
}

/// A body that blocks its thread does not starve its heartbeat (it runs on its own task): no
/// other caller takes the key over meanwhile.
pub async fn blocking_body_keeps_its_lease(b: &Backend) {
    let op = unique_op("blocking");
    let call = || Call::new(op.clone()).key(&"k").lease(ms(300));
    let started = Arc::new(Notify::new());
    let owner = {
        let idem = b.worker("owner");
        let (call, started) = (call(), started.clone());
        tokio::spawn(async move {
            idem.call(call, || async move {
                started.notify_one();
                std::thread::sleep(ms(1200)); // a blocking client, four leases long
                Ok::<_, TestError>("blocked".to_string())
            })
            .await
        })
    };
    started.notified().await;
    tokio::time::sleep(ms(700)).await; // past two leases, still blocked
    let runs = AtomicUsize::new(0);
    let challenger = counted(
        &b.worker("challenger"),
        call().on_conflict(OnConflict::Error),
        &runs,
        "stolen",
    )
    .await;
    assert!(
        matches!(challenger, Err(TestError::Idem(Error::InProgress { .. }))),
        "{challenger:?}"
    );
    assert_eq!(owner.await.unwrap().unwrap(), "blocked");
}

/// The error type of the `cache_errors` scenarios: serializable, and it can carry idem's own
/// errors without stringifying them.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
pub enum ChargeError {
    /// A definitive answer: worth recording.
    #[error("card declined")]
    Declined,
    /// A transient failure: must be retried.
    #[error("provider timed out")]
    Timeout,
    /// idem's own error.
    #[error(transparent)]
    Idem(#[from] Error),
}

impl ChargeError {
    /// The predicate of `cache_errors = ChargeError::is_permanent`.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ChargeError::Declined)
    }
}

/// `cache_errors` with a predicate records only the errors it calls permanent; an error that
/// carries one of idem's own is never recorded, even when every error is.
pub async fn cache_errors_keeps_only_permanent_errors(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("charge");
    let runs = AtomicUsize::new(0);
    let charge = |key: &'static str, outcome: fn() -> Result<u32, ChargeError>| {
        let runs = &runs;
        idem.call_caching_errors_if(
            Call::new(op.clone()).key(key),
            ChargeError::is_permanent,
            move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                outcome()
            },
        )
    };
    assert!(matches!(
        charge("a", || Err(ChargeError::Timeout)).await,
        Err(ChargeError::Timeout)
    ));
    assert!(
        matches!(charge("a", || Ok(1)).await, Ok(1)),
        "a transient error is retried"
    );
    assert!(matches!(
        charge("b", || Err(ChargeError::Declined)).await,
        Err(ChargeError::Declined)
    ));
    assert!(
        matches!(charge("b", || Ok(2)).await, Err(ChargeError::Declined)),
        "a permanent error replays"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    // Every error recorded, but idem's own (here a key in progress, as a nested call would
    // return it) describes that moment, not the operation: never recorded.
    let runs = AtomicUsize::new(0);
    let all = |outcome: fn() -> Result<u32, ChargeError>| {
        let runs = &runs;
        idem.call_caching_errors(Call::new(op.clone()).key("c"), move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            outcome()
        })
    };
    let busy = || {
        Err(ChargeError::Idem(Error::Config(
            "a nested call's store was down".into(),
        )))
    };
    assert!(matches!(all(busy).await, Err(ChargeError::Idem(_))));
    assert!(
        matches!(all(|| Ok(3)).await, Ok(3)),
        "idem's error was not recorded"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// An error type that cannot hold idem's errors (`std::io::Error`) works through `try_call`:
/// the body's error and idem's arrive as the two sides of `CallError`.
pub async fn try_call_keeps_body_and_idem_errors_apart(b: &Backend) {
    let op = unique_op("io");
    let call = || Call::new(op.clone()).key(&"config.toml");
    let idem = b.worker("w");
    let missing = idem
        .try_call(call(), || async {
            std::fs::read_to_string("/definitely/not/here/config.toml")
        })
        .await;
    assert!(
        matches!(&missing, Err(CallError::Body(e)) if e.kind() == std::io::ErrorKind::NotFound),
        "{missing:?}"
    );
    let owner = start_hanging(&b.worker("owner"), call().lease(Duration::from_secs(60))).await;
    let busy = idem
        .try_call(call().on_conflict(OnConflict::Error), || async {
            Ok::<_, std::io::Error>("never".to_string())
        })
        .await;
    assert!(
        matches!(busy, Err(CallError::Idem(Error::InProgress { .. }))),
        "{busy:?}"
    );
    owner.abort();
}

/// A value the body paid for but idem cannot keep (a float NaN encodes as `null` and would
/// never decode; a value over the snapshot limit) is returned to the caller, the record says why
/// it was not kept, and the next call runs again.
pub async fn unrecordable_results_still_reach_the_caller(b: &Backend) {
    #[derive(Debug, Serialize, Deserialize)]
    struct Score {
        value: f64,
    }
    let idem = b.worker("w");
    let op = unique_op("nan");
    let call = || Call::new(op.clone()).key(&"k");
    let runs = AtomicUsize::new(0);
    let score = || {
        idem.call(call(), || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, TestError>(Score { value: f64::NAN })
        })
    };
    assert!(
        score().await.unwrap().value.is_nan(),
        "the caller got its value"
    );
    let record = idem.record(&call().key_value()).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Failed);
    let why = record.error.unwrap_or_default();
    assert!(why.starts_with("not recorded: "), "{why}");
    assert!(why.contains("cannot be"), "{why}");
    assert!(score().await.unwrap().value.is_nan());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "nothing was recorded to replay"
    );

    let small = Idem::builder(b.store.clone())
        .cache_capacity(0)
        .max_snapshot_bytes(16)
        .build();
    let op = unique_op("large");
    let big = "x".repeat(64);
    let got: String = small
        .call(Call::new(op.clone()).key(&"k"), || async {
            Ok::<_, TestError>(big.clone())
        })
        .await
        .unwrap();
    assert_eq!(got, big);
    let record = small
        .record(&Call::new(op).key(&"k").key_value())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, Status::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("over the snapshot limit"),
        "{record:?}"
    );
}
