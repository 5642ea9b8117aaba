//! Idempotent consumers on NATS JetStream (the shared server at `IDEM_TEST_NATS_URL`, and a
//! throwaway `nats-server` for the outage): redeliveries replay, failures dead-letter, the
//! in-flight bound, graceful shutdown, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_runtime::queue::nats::JetStreamSource;
use idem_runtime::queue::{Consumer, ConsumerReport};
use idem_runtime::Error;
use idem_tests::backends;
use idem_tests::brokers::{self, NatsFixture};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    id: String,
    sleep_ms: u64,
    fail: bool,
}

fn job(id: &str, sleep_ms: u64, fail: bool) -> Vec<u8> {
    serde_json::to_vec(&Job {
        id: id.into(),
        sleep_ms,
        fail,
    })
    .unwrap()
}

/// Handler runs per job id.
type Runs = Arc<Mutex<HashMap<String, u32>>>;

/// A handler that counts its runs, sleeps, and fails when asked.
fn handler(
    runs: Runs,
) -> impl Fn(Job) -> futures_util::future::BoxFuture<'static, Result<String, String>>
       + Send
       + Sync
       + 'static {
    move |job: Job| {
        let runs = runs.clone();
        Box::pin(async move {
            *runs.lock().unwrap().entry(job.id.clone()).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
            if job.fail {
                return Err(format!("job {} failed on purpose", job.id));
            }
            Ok(format!("done {}", job.id))
        })
    }
}

async fn until(consumer: &Consumer, done: impl Fn(&ConsumerReport) -> bool) {
    loop {
        if done(&consumer.report()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn source(fx: &NatsFixture, name: &str, ack_wait: Duration, batch: usize) -> JetStreamSource {
    let consumer = fx.consumer(name, ack_wait).await;
    JetStreamSource::new(fx.js.clone(), &consumer, fx.dead.clone(), batch)
        .await
        .unwrap()
}

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivered_message_replays_and_acks_without_rerunning() {
    let Some(fx) = brokers::nats().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    let runs = Runs::default();
    // The first run outlives the 1 s ack wait: JetStream redelivers while it runs; the
    // redelivery waits for it and replays its outcome.
    fx.publish(Some("slow-1"), &job("slow-1", 1_600, false))
        .await;
    fx.publish(Some("fast-1"), &job("fast-1", 0, false)).await;
    let consumer = Consumer::new(
        backend.worker("w"),
        idem_tests::unique_op("nats.redelivery"),
    );
    let src = source(&fx, "redelivery", Duration::from_secs(1), 4).await;
    let done = until(&consumer, |r| r.acked >= 3);
    let report = tokio::time::timeout(LIMIT, consumer.run(src, handler(runs.clone()), done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(runs.lock().unwrap().get("slow-1"), Some(&1), "{report:?}");
    assert_eq!(runs.lock().unwrap().get("fast-1"), Some(&1));
    assert_eq!(report.executed, 2, "{report:?}");
    assert!(report.replayed >= 1, "the redelivery replayed: {report:?}");

    // A publisher's retry past JetStream's window (another message, same id) replays too.
    let later = Consumer::new(backend.worker("w2"), consumer.op().to_owned());
    fx.js
        .send_publish(
            fx.subject.clone(),
            async_nats::jetstream::message::PublishMessage::build()
                .payload(job("fast-1", 0, false).into())
                .header("Nats-Msg-Id", "fast-1")
                .header("Nats-Expected-Stream", fx.stream.as_str()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut cons = fx.consumer("redelivery", Duration::from_secs(1)).await;
    let src = JetStreamSource::new(fx.js.clone(), &cons, fx.dead.clone(), 4)
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        later.run(src, handler(runs.clone()), until(&later, |r| r.acked >= 1)),
    )
    .await
    .ok();
    assert_eq!(runs.lock().unwrap().get("fast-1"), Some(&1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fx.backlog(&mut cons).await, (0, 0), "everything acked");
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_message_is_dead_lettered_after_n_attempts() {
    let Some(fx) = brokers::nats().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    let runs = Runs::default();
    fx.publish(Some("bad-1"), &job("bad-1", 0, true)).await;
    fx.publish(Some("good-1"), &job("good-1", 0, false)).await;
    let consumer = Consumer::new(backend.worker("w"), idem_tests::unique_op("nats.dead"))
        .max_attempts(3)
        .retry_delay(Duration::from_millis(50));
    let src = source(&fx, "dead", Duration::from_secs(5), 4).await;
    let done = until(&consumer, |r| r.dead_lettered >= 1 && r.acked >= 1);
    let report = tokio::time::timeout(LIMIT, consumer.run(src, handler(runs.clone()), done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(runs.lock().unwrap().get("bad-1"), Some(&3), "{report:?}");
    assert_eq!(report.retried, 2, "{report:?}");
    let dead = fx.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let header = |name: &str| {
        dead[0]
            .0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(header("idem-error").contains("job bad-1 failed on purpose"));
    assert_eq!(header("idem-attempts"), "3");
    assert_eq!(header("idem-error-kind"), "handler");
    assert_eq!(header("Nats-Msg-Id"), "dead:bad-1");
    assert_eq!(dead[0].1, job("bad-1", 0, true), "the original payload");
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_bound_is_respected() {
    let Some(fx) = brokers::nats().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    for i in 0..24 {
        fx.publish(Some(&format!("c-{i}")), &job(&format!("c-{i}"), 40, false))
            .await;
    }
    let consumer =
        Consumer::new(backend.worker("w"), idem_tests::unique_op("nats.bound")).concurrency(4);
    let src = source(&fx, "bound", Duration::from_secs(10), 4).await;
    let (n, m) = (now.clone(), most.clone());
    let handler = move |job: Job| {
        let (n, m) = (n.clone(), m.clone());
        async move {
            let inside = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(inside, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, String>(())
        }
    };
    let done = until(&consumer, |r| r.acked >= 24);
    let report = tokio::time::timeout(LIMIT, consumer.run(src, handler, done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        most.load(Ordering::SeqCst),
        4,
        "reached, never passed: {report:?}"
    );
    assert_eq!(report.max_in_flight, 4);
    assert_eq!(report.executed, 24);
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_finishes_what_it_holds() {
    let Some(fx) = brokers::nats().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    let runs = Runs::default();
    for i in 0..6 {
        fx.publish(Some(&format!("s-{i}")), &job(&format!("s-{i}"), 400, false))
            .await;
    }
    let consumer =
        Consumer::new(backend.worker("w"), idem_tests::unique_op("nats.shutdown")).concurrency(3);
    let src = source(&fx, "shutdown", Duration::from_secs(30), 3).await;
    // Shut down as soon as the first three are running: they finish and are acked; the other
    // three are never started.
    let r = runs.clone();
    let shutdown = async move {
        while r.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let report = tokio::time::timeout(LIMIT, consumer.run(src, handler(runs.clone()), shutdown))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.executed, 3, "{report:?}");
    assert_eq!(report.acked, 3, "{report:?}");
    // The rest is still there for the next consumer, nothing acked unhandled.
    let next = Consumer::new(backend.worker("w2"), consumer.op().to_owned());
    let src = source(&fx, "shutdown", Duration::from_secs(30), 3).await;
    let done = until(&next, |r| r.acked >= 3);
    tokio::time::timeout(LIMIT, next.run(src, handler(runs.clone()), done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(runs.lock().unwrap().len(), 6);
    assert!(runs.lock().unwrap().values().all(|n| *n == 1));
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_a_typed_error_and_dead_lettered_never_lost() {
    let Some(fx) = brokers::nats().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    let runs = Runs::default();
    fx.publish(None, &job("no-id", 0, false)).await;
    fx.publish(Some("garbage-1"), b"{not json").await;
    fx.publish(Some("ok-1"), &job("ok-1", 0, false)).await;
    let consumer = Consumer::new(backend.worker("w"), idem_tests::unique_op("nats.bad"));
    let src = source(&fx, "bad", Duration::from_secs(10), 4).await;
    let done = until(&consumer, |r| r.dead_lettered >= 2 && r.acked >= 1);
    let report = tokio::time::timeout(LIMIT, consumer.run(src, handler(runs.clone()), done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.executed, 1, "{report:?}");
    let rejected = consumer.take_rejected();
    assert_eq!(rejected.len(), 2);
    assert!(rejected
        .iter()
        .all(|e| matches!(e, Error::BadMessage { .. })));
    assert!(rejected
        .iter()
        .any(|e| e.to_string().contains("no message id")));
    assert!(rejected
        .iter()
        .any(|e| e.to_string().contains("does not decode")));
    assert_eq!(fx.dead_letters().await.len(), 2, "kept in the dead letters");

    // With a key function, a message without an id is handled, keyed by its payload.
    fx.publish(None, &job("keyed", 0, false)).await;
    fx.publish(None, &job("keyed", 0, false)).await; // its duplicate, without an id either
    let keyed = Consumer::new(backend.worker("w"), consumer.op().to_owned())
        .key_fn(|payload| serde_json::from_slice::<Job>(payload).ok().map(|j| j.id));
    let src = source(&fx, "bad", Duration::from_secs(10), 4).await;
    let done = until(&keyed, |r| r.acked >= 2);
    let report = tokio::time::timeout(LIMIT, keyed.run(src, handler(runs.clone()), done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.executed, report.replayed), (1, 1), "{report:?}");
    assert_eq!(runs.lock().unwrap().get("keyed"), Some(&1));
    fx.delete().await;
}

#[tokio::test]
async fn unreachable_broker_is_a_typed_error() {
    let url = format!("nats://127.0.0.1:{}", brokers::closed_port());
    let error = idem_runtime::queue::nats::connect(&url).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Broker {
                action: "connect",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.kind(), "broker");
}

/// A throwaway `nats-server` (when the binary is there) stopped mid-run and started again on
/// the same store directory: the consumer reports the broker's failure as a typed error, and
/// nothing it did not record was acked; the next consumer finishes every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_going_away_mid_run_loses_nothing() {
    let bin = std::path::Path::new("/usr/sbin/nats-server");
    if !bin.exists() {
        eprintln!("\n*** SKIPPED: no /usr/sbin/nats-server for a throwaway server ***\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = brokers::closed_port();
    let start = || {
        tokio::process::Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let url = format!("nats://127.0.0.1:{port}");
    let connect = || async {
        for _ in 0..100 {
            if let Ok(client) = idem_runtime::queue::nats::connect(&url).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the throwaway nats-server did not start");
    };
    let mut server = start();
    let js = async_nats::jetstream::new(connect().await);
    let fx = NatsFixture::on(js).await;
    for i in 0..20 {
        fx.publish(Some(&format!("o-{i}")), &job(&format!("o-{i}"), 100, false))
            .await;
    }
    let backend = backends::sqlite().await.unwrap();
    let runs = Runs::default();
    let op = idem_tests::unique_op("nats.outage");
    let consumer = Consumer::new(backend.worker("w"), op.clone()).concurrency(4);
    let src = source(&fx, "outage", Duration::from_secs(2), 4).await;
    let r = runs.clone();
    let running = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            consumer
                .run(src, handler(r), std::future::pending::<()>())
                .await
        }
    });
    while runs.lock().unwrap().len() < 6 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(8), running).await;
    // The consumer either ended with the broker's typed error, or was still waiting for the
    // server to come back (async-nats reconnects); both keep every unrecorded message unacked.
    if let Ok(ended) = ended {
        let error = ended.unwrap().unwrap_err();
        assert!(matches!(error, Error::Broker { .. }), "{error}");
    }
    let during = consumer.report();
    let _server = start();
    let js = async_nats::jetstream::new(connect().await);
    let fx = NatsFixture {
        js,
        stream: fx.stream,
        subject: fx.subject,
        dead: fx.dead,
    };
    let next = Consumer::new(backend.worker("w2"), op).concurrency(4);
    let mut cons = fx.consumer("outage", Duration::from_secs(2)).await;
    let src = JetStreamSource::new(fx.js.clone(), &cons, fx.dead.clone(), 4)
        .await
        .unwrap();
    let done = async {
        loop {
            let (pending, ack_pending) = fx.backlog(&mut cons.clone()).await;
            if pending == 0 && ack_pending == 0 && runs.lock().unwrap().len() == 20 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(LIMIT, next.run(src, handler(runs.clone()), done))
        .await
        .unwrap()
        .unwrap();
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 20, "nothing lost: {during:?}");
    assert!(runs.values().all(|n| *n == 1), "each once: {runs:?}");
    assert_eq!(fx.backlog(&mut cons).await, (0, 0));
}
