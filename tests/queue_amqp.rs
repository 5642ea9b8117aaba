//! Idempotent consumers on RabbitMQ (`IDEM_TEST_AMQP_URL`): a delivery whose ack was lost is
//! redelivered and replays, duplicates replay, failures dead-letter, the prefetch bound,
//! graceful shutdown, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_runtime::queue::amqp::AmqpSource;
use idem_runtime::queue::{Consumer, ConsumerReport};
use idem_runtime::Error;
use idem_tests::backends;
use idem_tests::brokers::{self, amqp_header};
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

type Runs = Arc<Mutex<HashMap<String, u32>>>;

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

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_ack_redelivers_and_replays_without_rerunning() {
    let Some(fx) = brokers::amqp().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    let runs = Runs::default();
    fx.publish(Some("slow-1"), &job("slow-1", 500, false)).await;
    let op = idem_tests::unique_op("amqp.redelivery");
    // The first consumer's connection dies while its handler runs: the outcome is recorded,
    // the ack is lost, and RabbitMQ redelivers the message to the second consumer.
    let (first_conn, first_chan) = fx.second_channel().await;
    let first = Consumer::new(backend.worker("w1"), op.clone());
    let src = AmqpSource::new(first_chan, &fx.queue, fx.dead.clone(), 4)
        .await
        .unwrap();
    let r = runs.clone();
    let running = tokio::spawn({
        let first = first.clone();
        async move {
            first
                .run(src, handler(r), std::future::pending::<()>())
                .await
        }
    });
    while runs.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = first_conn.close(320, "gone".into()).await;
    let ended = tokio::time::timeout(LIMIT, running).await.unwrap().unwrap();
    assert!(matches!(ended, Err(Error::Broker { .. })), "{ended:?}");
    assert_eq!(first.report().acked, 0, "{:?}", first.report());
    assert_eq!(first.report().executed, 1, "recorded, not acked");

    fx.publish(Some("slow-1"), &job("slow-1", 500, false)).await; // and a duplicate publish
    let (_conn, chan) = fx.second_channel().await;
    let second = Consumer::new(backend.worker("w2"), op);
    let src = AmqpSource::new(chan, &fx.queue, fx.dead.clone(), 4)
        .await
        .unwrap();
    let done = until(&second, |r| r.acked >= 2);
    let report = tokio::time::timeout(LIMIT, second.run(src, handler(runs.clone()), done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(runs.lock().unwrap().get("slow-1"), Some(&1), "{report:?}");
    assert_eq!((report.executed, report.replayed), (0, 2), "{report:?}");
    assert_eq!(fx.ready(&fx.queue).await, 0);
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_message_is_dead_lettered_after_n_attempts() {
    let Some(fx) = brokers::amqp().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    let runs = Runs::default();
    fx.publish(Some("bad-1"), &job("bad-1", 0, true)).await;
    fx.publish(Some("good-1"), &job("good-1", 0, false)).await;
    let consumer = Consumer::new(backend.worker("w"), idem_tests::unique_op("amqp.dead"))
        .max_attempts(3)
        .retry_delay(Duration::from_millis(20));
    let src = AmqpSource::new(fx.channel.clone(), &fx.queue, fx.dead.clone(), 4)
        .await
        .unwrap();
    let done = until(&consumer, |r| r.dead_lettered >= 1 && r.acked >= 1);
    let report = tokio::time::timeout(LIMIT, consumer.run(src, handler(runs.clone()), done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(runs.lock().unwrap().get("bad-1"), Some(&3), "{report:?}");
    let dead = fx.drain(&fx.dead).await;
    assert_eq!(dead.len(), 1);
    let (headers, id, payload) = &dead[0];
    assert_eq!(id.as_deref(), Some("bad-1"));
    assert!(amqp_header(headers, "idem-error")
        .unwrap()
        .contains("job bad-1 failed on purpose"));
    assert_eq!(amqp_header(headers, "idem-attempts").as_deref(), Some("3"));
    assert_eq!(payload, &job("bad-1", 0, true));
    assert_eq!(fx.ready(&fx.queue).await, 0);
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefetch_bounds_the_messages_in_flight() {
    let Some(fx) = brokers::amqp().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    for i in 0..24 {
        fx.publish(Some(&format!("c-{i}")), &job(&format!("c-{i}"), 40, false))
            .await;
    }
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
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
    let consumer =
        Consumer::new(backend.worker("w"), idem_tests::unique_op("amqp.bound")).concurrency(4);
    let src = AmqpSource::new(fx.channel.clone(), &fx.queue, fx.dead.clone(), 4)
        .await
        .unwrap();
    let done = until(&consumer, |r| r.acked >= 24);
    let report = tokio::time::timeout(LIMIT, consumer.run(src, handler, done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(most.load(Ordering::SeqCst), 4, "{report:?}");
    assert_eq!(report.max_in_flight, 4);
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_finishes_what_it_holds() {
    let Some(fx) = brokers::amqp().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    let runs = Runs::default();
    for i in 0..6 {
        fx.publish(Some(&format!("s-{i}")), &job(&format!("s-{i}"), 300, false))
            .await;
    }
    let (conn, chan) = fx.second_channel().await;
    let consumer =
        Consumer::new(backend.worker("w"), idem_tests::unique_op("amqp.shutdown")).concurrency(3);
    let src = AmqpSource::new(chan, &fx.queue, fx.dead.clone(), 3)
        .await
        .unwrap();
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
    assert_eq!((report.executed, report.acked), (3, 3), "{report:?}");
    let _ = conn.close(200, "done".into()).await;
    // The three never started went back to the queue.
    let mut ready = 0;
    for _ in 0..100 {
        ready = fx.ready(&fx.queue).await;
        if ready == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready, 3);
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_a_typed_error_and_dead_lettered_never_lost() {
    let Some(fx) = brokers::amqp().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    let runs = Runs::default();
    fx.publish(None, &job("no-id", 0, false)).await;
    fx.publish(Some("garbage-1"), b"{not json").await;
    fx.publish(Some("ok-1"), &job("ok-1", 0, false)).await;
    let consumer = Consumer::new(backend.worker("w"), idem_tests::unique_op("amqp.bad"));
    let src = AmqpSource::new(fx.channel.clone(), &fx.queue, fx.dead.clone(), 4)
        .await
        .unwrap();
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
    let dead = fx.drain(&fx.dead).await;
    assert_eq!(dead.len(), 2);
    assert!(dead
        .iter()
        .all(|(h, _, _)| amqp_header(h, "idem-error-kind").as_deref() == Some("bad_message")));
    fx.delete().await;
}

#[tokio::test]
async fn unreachable_broker_is_a_typed_error() {
    let url = format!(
        "amqp://guest:secret@127.0.0.1:{}/%2f",
        brokers::closed_port()
    );
    let error = idem_runtime::queue::amqp::connect(&url).await.unwrap_err();
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
    assert!(!error.to_string().contains("secret"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn result_that_cannot_be_recorded_is_never_acked_as_done() {
    let Some(fx) = brokers::amqp().await else {
        return;
    };
    let backend = backends::sqlite().await.unwrap();
    fx.publish(Some("big-1"), &job("big-1", 0, false)).await;
    // A snapshot limit smaller than the handler's result: the value is never recorded.
    let idem = idem_runtime::Idem::builder(backend.store.clone())
        .max_snapshot_bytes(4)
        .build();
    let runs = Runs::default();
    let consumer = Consumer::new(idem, idem_tests::unique_op("amqp.unrecorded"))
        .max_attempts(2)
        .retry_delay(Duration::from_millis(10));
    let src = AmqpSource::new(fx.channel.clone(), &fx.queue, fx.dead.clone(), 4)
        .await
        .unwrap();
    let done = until(&consumer, |r| r.dead_lettered >= 1);
    let report = tokio::time::timeout(LIMIT, consumer.run(src, handler(runs.clone()), done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.acked, 0, "never acked as done: {report:?}");
    assert_eq!(runs.lock().unwrap().get("big-1"), Some(&2));
    let dead = fx.drain(&fx.dead).await;
    assert!(amqp_header(&dead[0].0, "idem-error")
        .unwrap()
        .contains("cannot be recorded"));
    fx.delete().await;
}
