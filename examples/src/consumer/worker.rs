//! A consumer process: handles the run's messages, through idem (each message's effect is a
//! row inserted in the step's own transaction) or without it (insert, then ack), printing its
//! counters every 100 ms, and exits once every message has its effect and nothing arrives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use idem_runtime::queue::{Consumer, Source};
use idem_runtime::{Error, Idem};
use tokio::sync::Semaphore;

use super::broker::Broker;
use super::db::Db;
use super::{Args, Job, EXIT_UNREACHABLE};

/// How long a slow handler takes: past NATS's 1 s ack wait.
const SLOW: Duration = Duration::from_millis(1_300);

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    dead: AtomicU64,
    /// Milliseconds since start of the first delivery and of the latest.
    first_ms: AtomicU64,
    last_ms: AtomicU64,
}

fn progress(c: &Counters) {
    println!(
        "{}",
        serde_json::json!({
            "received": c.received.load(Ordering::SeqCst),
            "dead_lettered": c.dead.load(Ordering::SeqCst),
            "busy_ms": c.last_ms.load(Ordering::SeqCst).saturating_sub(c.first_ms.load(Ordering::SeqCst)),
        })
    );
}

pub(crate) async fn main(args: &Args, run: &str) -> i32 {
    let broker = match Broker::connect(&args.broker, run).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("consumer worker: {e}");
            return EXIT_UNREACHABLE;
        }
    };
    let conns = u32::try_from(args.in_flight).unwrap_or(16) + 4;
    let db = match Db::connect(&args.store, conns).await {
        Ok(db) => db,
        Err(e) => super::fail("open the database", e),
    };
    // The store is opened before the subscription starts: prefetched messages wait for no
    // set-up (their ack wait runs from delivery).
    let idem = if args.no_idem {
        None
    } else {
        match Idem::open(&args.store).await {
            Ok(idem) => Some(idem),
            Err(e) => super::fail("open the store", e),
        }
    };
    // Prefetch beyond the handlers in flight, so a freed slot finds its next message here.
    let source = match broker.source(args.in_flight * 4).await {
        Ok(s) => s,
        Err(e) => super::fail("subscribe", e),
    };
    let unique = i64::try_from(args.messages).unwrap_or(i64::MAX);
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let c = counters.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            progress(&c);
        }
    });
    // Done: every message has its effect and nothing arrived for 1.5 s (longer than a slow
    // handler's redelivery takes), so the redeliveries under way are handled too.
    let done = {
        let (db, c, run) = (db.clone(), counters.clone(), run.to_owned());
        async move {
            let mut seen = (u64::MAX, Instant::now());
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let received = c.received.load(Ordering::SeqCst);
                if received != seen.0 {
                    seen = (received, Instant::now());
                }
                // Counted only once deliveries stopped: the count scans the run's rows, and
                // polling it all along would load the database the run measures.
                if seen.1.elapsed() <= Duration::from_millis(1_500) {
                    continue;
                }
                let distinct = db.effects(&run).await.map(|(_, d)| d).unwrap_or(0);
                if distinct >= unique {
                    return;
                }
            }
        }
    };
    let timing = Timing {
        start,
        counters: counters.clone(),
    };
    let result = match idem {
        None => plain(source, &db, run, args.in_flight, timing, done).await,
        Some(idem) => with_idem(args, idem, source, &db, run, timing, done).await,
    };
    ticker.abort();
    progress(&counters);
    match result {
        Ok(()) => 0,
        Err(e) => super::fail("consume", e),
    }
}

#[derive(Clone)]
struct Timing {
    start: Instant,
    counters: Arc<Counters>,
}

impl Timing {
    fn delivered(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let _ = self.counters.first_ms.compare_exchange(
            0,
            now.max(1),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.counters.received.fetch_add(1, Ordering::SeqCst);
    }

    fn finished(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.counters.last_ms.fetch_max(now, Ordering::SeqCst);
    }
}

/// Counts deliveries as they come out of a source.
struct Counted<S> {
    inner: S,
    timing: Timing,
}

#[async_trait::async_trait]
impl<S: Source> Source for Counted<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn next(&mut self) -> Option<Result<Box<dyn idem_runtime::queue::Delivery>, Error>> {
        let next = self.inner.next().await;
        if matches!(next, Some(Ok(_))) {
            self.timing.delivered();
        }
        next
    }
    async fn stop(&mut self) -> Result<(), Error> {
        self.inner.stop().await
    }
}

async fn with_idem(
    args: &Args,
    idem: Idem,
    source: Box<dyn Source>,
    db: &Db,
    run: &str,
    timing: Timing,
    done: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let consumer = Consumer::new(idem, "examples.consumer.record")
        .concurrency(args.in_flight)
        .group_commit(args.group)
        .lease(Duration::from_secs(5))
        .drain(Duration::from_secs(10));
    let source = Counted {
        inner: source,
        timing: timing.clone(),
    };
    let run = run.to_owned();
    let report = match db {
        _ if args.call => {
            let db = db.clone();
            consumer
                .run(
                    source,
                    move |job: Job| {
                        let (db, run, timing) = (db.clone(), run.clone(), timing.clone());
                        async move {
                            if job.slow {
                                tokio::time::sleep(SLOW).await;
                            }
                            db.insert(&run, &job.id).await?;
                            timing.finished();
                            Ok::<_, sqlx::Error>(())
                        }
                    },
                    done,
                )
                .await?
        }
        Db::Sqlite(pool) => {
            consumer
                .run_in_tx(
                    source,
                    pool.clone(),
                    move |tx, job: Job| -> BoxFuture<'_, Result<(), Error>> {
                        let (run, timing) = (run.clone(), timing.clone());
                        Box::pin(async move {
                            if job.slow {
                                tokio::time::sleep(SLOW).await;
                            }
                            sqlx::query(
                                "INSERT INTO consumer_effects (run, msg_id) VALUES (?1, ?2)",
                            )
                            .bind(&run)
                            .bind(&job.id)
                            .execute(&mut **tx)
                            .await?;
                            timing.finished();
                            Ok(())
                        })
                    },
                    done,
                )
                .await?
        }
        Db::Postgres(pool) => {
            consumer
                .run_in_tx(
                    source,
                    pool.clone(),
                    move |tx, job: Job| -> BoxFuture<'_, Result<(), Error>> {
                        let (run, timing) = (run.clone(), timing.clone());
                        Box::pin(async move {
                            if job.slow {
                                tokio::time::sleep(SLOW).await;
                            }
                            sqlx::query(
                                "INSERT INTO consumer_effects (run, msg_id) VALUES ($1, $2)",
                            )
                            .bind(&run)
                            .bind(&job.id)
                            .execute(&mut **tx)
                            .await?;
                            timing.finished();
                            Ok(())
                        })
                    },
                    done,
                )
                .await?
        }
    };
    eprintln!("consumer worker: {report:?}");
    Ok(())
}

/// The same consumer without idem: insert the effect, then ack; at-least-once.
async fn plain(
    mut source: Box<dyn Source>,
    db: &Db,
    run: &str,
    in_flight: usize,
    timing: Timing,
    done: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let slots = Arc::new(Semaphore::new(in_flight));
    tokio::pin!(done);
    loop {
        let permit = tokio::select! {
            () = &mut done => break,
            permit = slots.clone().acquire_owned() => permit.map_err(|e| Error::Config(e.to_string()))?,
        };
        let delivery = tokio::select! {
            () = &mut done => break,
            next = source.next() => match next {
                None => break,
                Some(delivery) => delivery?,
            },
        };
        timing.delivered();
        let (db, run, timing) = (db.clone(), run.to_owned(), timing.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(job) = serde_json::from_slice::<Job>(delivery.payload()) else {
                return;
            };
            if job.slow {
                tokio::time::sleep(SLOW).await;
            }
            if db.insert(&run, &job.id).await.is_ok() {
                let _ = delivery.ack().await;
                timing.finished();
            }
        });
    }
    let _ = source.stop().await;
    let _ = slots
        .acquire_many(u32::try_from(in_flight).unwrap_or(u32::MAX))
        .await;
    Ok(())
}
