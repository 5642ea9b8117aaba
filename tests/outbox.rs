//! The transactional outbox end to end on a real broker: steps enqueue messages in their own
//! transactions, a relay killed mid-batch republishes what it had not marked, and the idem
//! consumer turns that at-least-once publication into one effect per message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_runtime::outbox::{Outbox, Relay};
use idem_runtime::queue::amqp::{AmqpPublisher, AmqpSource};
use idem_runtime::queue::{Consumer, Publisher};
use idem_runtime::{Call, Error, Idem};
use idem_tests::brokers;

/// The real publisher, frozen after `limit` publishes: a relay process stuck (then killed)
/// between its publishes and the mark of its batch.
struct FreezesAfter<P> {
    inner: P,
    limit: usize,
    done: AtomicUsize,
}

#[async_trait::async_trait]
impl<P: Publisher> Publisher for FreezesAfter<P> {
    async fn publish(&self, destination: &str, id: &str, payload: &[u8]) -> Result<(), Error> {
        if self.done.load(Ordering::SeqCst) >= self.limit {
            std::future::pending::<()>().await;
        }
        self.inner.publish(destination, id, payload).await?;
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn relay_killed_mid_batch_gives_one_effect_per_message(
    idem: Idem,
    sqlite_url: Option<String>,
) {
    let Some(fx) = brokers::amqp().await else {
        return;
    };
    const ORDERS: usize = 30;
    let outbox = Outbox::open(&idem).await.unwrap();
    let op = idem_tests::unique_op("orders.place");
    // Each order is a step that enqueues its message in its own transaction; every step is
    // called twice (a retried request), the second replays and enqueues nothing.
    for round in 0..2 {
        for i in 0..ORDERS {
            let call = Call::new(op.clone()).key(&(i as u64));
            let (outbox, queue) = (outbox.clone(), fx.queue.clone());
            let order = format!("order-{i}");
            match &sqlite_url {
                Some(url) => {
                    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                    idem.step(call, &mut tx, |tx| {
                        Box::pin(async move { outbox.enqueue(tx, &queue, &order).await })
                    })
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                    pool.close().await;
                }
                None => {
                    let pool = match idem.store().sql_store() {
                        Some(idem_runtime::store::SqlStore::Postgres(s)) => s.pool().clone(),
                        _ => unreachable!(),
                    };
                    let mut tx = pool.begin().await.unwrap();
                    idem.step(call, &mut tx, |tx| {
                        Box::pin(async move { outbox.enqueue(tx, &queue, &order).await })
                    })
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                }
            }
        }
        assert_eq!(
            outbox.pending().await.unwrap(),
            ORDERS as u64,
            "round {round}"
        );
    }

    // A relay that freezes after 12 publishes of its 20-message batch, then is killed: none of
    // its batch is marked sent.
    let frozen = Relay::new(
        outbox.clone(),
        FreezesAfter {
            inner: AmqpPublisher::new(fx.channel.clone()),
            limit: 12,
            done: AtomicUsize::new(0),
        },
    )
    .batch(20);
    let stuck = tokio::spawn(async move { frozen.relay_once().await });
    while fx.ready(&fx.queue).await < 12 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stuck.abort();
    assert!(stuck.await.unwrap_err().is_cancelled());
    assert_eq!(
        outbox.pending().await.unwrap(),
        ORDERS as u64,
        "nothing marked"
    );

    // The next relay publishes everything again, with the same ids.
    let relay = Relay::new(outbox.clone(), AmqpPublisher::new(fx.channel.clone())).batch(8);
    let mut published = 0;
    while outbox.pending().await.unwrap() > 0 {
        published += relay.relay_once().await.unwrap();
    }
    assert_eq!(published, ORDERS);

    // The consumer sees 42 deliveries and makes 30 effects.
    let effects: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let consumer = Consumer::new(idem.clone(), idem_tests::unique_op("orders.ship"));
    let source = AmqpSource::new(fx.channel.clone(), &fx.queue, fx.dead.clone(), 8)
        .await
        .unwrap();
    let e = effects.clone();
    let handler = move |order: String| {
        let e = e.clone();
        async move {
            *e.lock().unwrap().entry(order).or_default() += 1;
            Ok::<_, String>(())
        }
    };
    let c = consumer.clone();
    let done = async move {
        while c.report().acked < (ORDERS + 12) as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let report = tokio::time::timeout(Duration::from_secs(60), consumer.run(source, handler, done))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.received, (ORDERS + 12) as u64, "{report:?}");
    assert_eq!(
        (report.executed, report.replayed),
        (ORDERS as u64, 12),
        "{report:?}"
    );
    let effects = effects.lock().unwrap().clone();
    assert_eq!(effects.len(), ORDERS);
    assert!(effects.values().all(|n| *n == 1), "{effects:?}");
    assert_eq!(
        outbox.purge_sent(Duration::ZERO).await.unwrap(),
        ORDERS as u64
    );
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_relay_killed_mid_batch_gives_one_effect_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    let idem = Idem::open(&url).await.unwrap();
    relay_killed_mid_batch_gives_one_effect_per_message(idem, Some(url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_relay_killed_mid_batch_gives_one_effect_per_message() {
    let url = idem_tests::backends::postgres_url();
    let schema = format!("outbox_{}", uuid::Uuid::new_v4().simple());
    let idem = match Idem::open(&format!("{url}?idem_schema={schema}")).await {
        Ok(idem) => idem,
        Err(e) => {
            assert!(!idem_tests::servers_required(), "PostgreSQL at {url}: {e}");
            eprintln!("\n*** SKIPPED: PostgreSQL at {url} unreachable ({e}) ***\n");
            return;
        }
    };
    relay_killed_mid_batch_gives_one_effect_per_message(idem.clone(), None).await;
    if let Some(idem_runtime::store::SqlStore::Postgres(s)) = idem.store().sql_store() {
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(s.pool())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn enqueue_outside_a_step_needs_an_id_and_the_memory_store_has_no_outbox() {
    let error = Outbox::open(&Idem::memory()).await.unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error}");
    let idem = Idem::open("sqlite::memory:").await.unwrap();
    let outbox = Outbox::open(&idem).await.unwrap();
    let pool = match idem.store().sql_store() {
        Some(idem_runtime::store::SqlStore::Sqlite(s)) => s.pool().clone(),
        _ => unreachable!(),
    };
    let mut conn = pool.acquire().await.unwrap();
    let error = outbox.enqueue(&mut conn, "orders", &1).await.unwrap_err();
    assert!(error.to_string().contains("enqueue_with_id"), "{error}");
    outbox
        .enqueue_with_id(&mut conn, "orders", "o-1", &1)
        .await
        .unwrap();
    outbox
        .enqueue_with_id(&mut conn, "orders", "o-1", &1)
        .await
        .unwrap();
    drop(conn);
    assert_eq!(outbox.pending().await.unwrap(), 1, "one id, one message");
}
