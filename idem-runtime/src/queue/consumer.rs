//! [`Consumer`]: the options of an idempotent consumer, its counters, and its pull loop
//! (bounded in-flight messages, graceful shutdown).

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::delivery::Source;
use super::group::{process_group, GroupRunner};
use super::process::{process, Runner};
use crate::error::Error;
use crate::idem::Idem;

/// A key function: the message's key from its payload, or `None` when it has none.
pub type KeyFn = Arc<dyn Fn(&[u8]) -> Option<String> + Send + Sync>;

/// An idempotent consumer: each message runs its handler as one idempotent call of `op`, keyed
/// by the message's id (or by a [`Consumer::key_fn`] over its payload), and is acked only once
/// the call's outcome is recorded. A redelivered message replays that outcome and is acked
/// without running the handler again. A handler that keeps failing sends its message to the
/// dead letters after [`Consumer::max_attempts`] deliveries.
///
/// Run it on a broker with [`Consumer::run`] (or [`Consumer::run_in_tx`]) and a source from
/// `queue::nats` (feature `nats`) or `queue::amqp` (feature `amqp`).
#[derive(Clone)]
pub struct Consumer {
    pub(crate) idem: Idem,
    pub(crate) op: Cow<'static, str>,
    pub(crate) concurrency: usize,
    pub(crate) group: usize,
    pub(crate) max_attempts: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) drain: Duration,
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
    pub(crate) wait: Duration,
    pub(crate) key_fn: Option<KeyFn>,
    pub(crate) stats: Arc<Stats>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("op", &self.op)
            .field("concurrency", &self.concurrency)
            .field("group", &self.group)
            .field("max_attempts", &self.max_attempts)
            .field("retry_delay", &self.retry_delay)
            .field("drain", &self.drain)
            .field("key_fn", &self.key_fn.is_some())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer that runs operation `op` through `idem`: 16 messages in flight, 5 attempts,
    /// 1 s between tries, 30 s to drain at shutdown, outcomes kept 7 days.
    pub fn new(idem: Idem, op: impl Into<Cow<'static, str>>) -> Self {
        Self {
            idem,
            op: op.into(),
            concurrency: 16,
            group: 1,
            max_attempts: 5,
            retry_delay: Duration::from_secs(1),
            drain: Duration::from_secs(30),
            ttl: Duration::from_secs(7 * 24 * 3600),
            lease: Duration::from_secs(30),
            wait: Duration::from_secs(300),
            key_fn: None,
            stats: Arc::new(Stats::default()),
        }
    }

    /// At most this many messages are handled at once (at least 1). Default 16.
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// With [`Consumer::run_in_tx`], up to `n` messages that are waiting at the same time run
    /// in one transaction of the pool, one after another, and commit together: one `COMMIT`
    /// (one WAL flush or fsync) for the group instead of one per message. Default 1 (each
    /// message in its own transaction); [`Consumer::run`] ignores it.
    ///
    /// Each message stays exactly-once: its claim, its handler's writes and its outcome commit
    /// with the group, and it is acked only after that commit. If any message of a group does
    /// not succeed (its handler fails, its key is held by another consumer, the database
    /// refuses), the whole group rolls back and each of its messages runs again alone, in its
    /// own transaction, as without grouping: so a failing handler runs twice for that delivery
    /// (once in the group, once alone), and handlers of a group see each other's writes. Keep
    /// `n` at or below the concurrency; a group takes only messages already delivered, never
    /// waits for more.
    #[must_use]
    pub fn group_commit(mut self, n: usize) -> Self {
        self.group = n.max(1);
        self
    }

    /// After this many deliveries whose handler failed, the message goes to the dead letters
    /// with its last error (at least 1). Default 5.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The pause before a failed message is tried again. Default 1 s. (NATS redelivers after it;
    /// AMQP republishes after it, holding the message's slot meanwhile.)
    #[must_use]
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// How long shutdown waits for in-flight handlers before dropping them (their claims are
    /// released at once and their messages, unacked, are delivered again). Default 30 s.
    #[must_use]
    pub fn drain(mut self, timeout: Duration) -> Self {
        self.drain = timeout;
        self
    }

    /// How long an outcome is kept for redeliveries and duplicates to replay. Default 7 days:
    /// longer than any broker keeps redelivering.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The lease of a handler's claim (a crashed consumer's message is taken over after it).
    /// Default 30 s.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The longest a redelivery waits for a handler still running on the same message (its ack
    /// wait ran out) before it is handed back. Default 5 min.
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Keys messages by a function of their payload instead of the broker's message id (for
    /// producers that set none). Without it, a message without an id is dead-lettered with
    /// [`Error::BadMessage`].
    #[must_use]
    pub fn key_fn(mut self, key: impl Fn(&[u8]) -> Option<String> + Send + Sync + 'static) -> Self {
        self.key_fn = Some(Arc::new(key));
        self
    }

    /// The operation name.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The counters so far (shared by the clones of this consumer).
    pub fn report(&self) -> ConsumerReport {
        self.stats.report()
    }

    /// Takes the errors of the bad messages seen so far (typed: [`Error::BadMessage`]; at most
    /// the first 64 are kept).
    pub fn take_rejected(&self) -> Vec<Error> {
        std::mem::take(&mut *self.stats.rejected.lock())
    }

    /// Handles messages from `source` with `handler` until `shutdown` completes or the source
    /// ends or fails. Each message's payload is decoded from JSON as `T`; the handler's `Ok`
    /// value is recorded (and replayed to redeliveries), an `Err` is retried and, after
    /// `max_attempts`, dead-lettered.
    ///
    /// At shutdown it stops pulling, waits up to [`Consumer::drain`] for the handlers in flight,
    /// and drops those still running (their claims are released, their messages redelivered).
    /// Returns the counters, or the broker's error if the source failed (after draining).
    pub async fn run<T, R, E, F, Fut>(
        &self,
        source: impl Source,
        handler: F,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<ConsumerReport, Error>
    where
        T: DeserializeOwned + Send + 'static,
        R: serde::Serialize + DeserializeOwned + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let runner = super::process::call_runner(self.idem.clone(), handler);
        self.pull(source, runner, None, shutdown).await
    }

    /// Like [`Consumer::run`], with a handler that writes to the database of the store in a
    /// transaction of `pool` (a `SqlitePool`, begun `IMMEDIATE`, or a `PgPool`): the handler's
    /// writes, the claim and the outcome commit together (a transactional step), so a consumer
    /// killed at any instant leaves either the message's whole effect or none of it.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
    pub async fn run_in_tx<P, T, R, E, F>(
        &self,
        source: impl Source,
        pool: P,
        handler: F,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<ConsumerReport, Error>
    where
        P: super::tx::TxPool,
        T: DeserializeOwned + Send + 'static,
        R: serde::Serialize + DeserializeOwned + Send + Sync + 'static,
        E: std::fmt::Display + Send + Sync + 'static,
        F: for<'c> Fn(&'c mut P::Tx, T) -> futures_util::future::BoxFuture<'c, Result<R, E>>
            + Send
            + Sync
            + 'static,
    {
        let handler = Arc::new(handler);
        let group = (self.group > 1).then(|| {
            super::tx::group_runner(self.idem.clone(), pool.clone(), Arc::clone(&handler))
        });
        let runner = super::tx::step_runner(self.idem.clone(), pool, handler);
        self.pull(source, runner, group, shutdown).await
    }

    async fn pull<T: DeserializeOwned + Send + 'static>(
        &self,
        mut source: impl Source,
        runner: Runner<T>,
        group: Option<GroupRunner<T>>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<ConsumerReport, Error> {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        let mut failure = None;
        tokio::pin!(shutdown);
        loop {
            // A slot first: no message is pulled that cannot start at once.
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break, // never closed
                },
            };
            while tasks.try_join_next().is_some() {}
            let next = tokio::select! {
                biased;
                () = &mut shutdown => break,
                next = source.next() => next,
            };
            let delivery = match next {
                None => break,
                Some(Err(error)) => {
                    failure = Some(error);
                    break;
                }
                Some(Ok(delivery)) => delivery,
            };
            let consumer = self.clone();
            let runner = Arc::clone(&runner);
            let source_name = source.name().to_owned();
            let Some(group) = group.as_ref().map(Arc::clone) else {
                tasks.spawn(async move {
                    let _permit = permit;
                    consumer.stats.enter(1);
                    process(&consumer, &source_name, delivery, &runner).await;
                    consumer.stats.leave(1);
                });
                continue;
            };
            // The messages already delivered (and a free slot each) join the first one's
            // group; none is waited for.
            // One permit for the group, released at once when it ends, so the next group finds
            // all of its slots free together.
            let (mut permit, mut deliveries) = (permit, vec![delivery]);
            let mut ended = false;
            while deliveries.len() < self.group {
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    break;
                };
                match source.next().now_or_never() {
                    None => break,
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    Some(Some(Err(error))) => {
                        failure = Some(error);
                        ended = true;
                        break;
                    }
                    Some(Some(Ok(delivery))) => {
                        permit.merge(slot);
                        deliveries.push(delivery);
                    }
                }
            }
            tasks.spawn(async move {
                let _permit = permit;
                let size = deliveries.len() as u64;
                consumer.stats.enter(size);
                process_group(&consumer, &source_name, deliveries, &runner, &group).await;
                consumer.stats.leave(size);
            });
            if ended {
                break;
            }
        }
        if let Some(error) = &failure {
            tracing::warn!(%error, "idem: the broker failed; draining the messages in flight");
        }
        if let Err(error) = source.stop().await {
            tracing::warn!(%error, "idem: could not stop the subscription; the broker will end it");
        }
        let drained = tokio::time::timeout(self.drain, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                still_running = tasks.len(),
                "idem: shutdown drain timed out; dropping the handlers still running (their messages will be redelivered)"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(self.report()),
        }
    }
}

/// The counters of a consumer.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) received: AtomicU64,
    pub(crate) executed: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) broker_errors: AtomicU64,
    pub(crate) grouped: AtomicU64,
    pub(crate) group_fallbacks: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    pub(crate) rejected: Mutex<Vec<Error>>,
}

/// At most this many rejected messages' errors are kept for the report.
const KEPT_REJECTIONS: usize = 64;

impl Stats {
    fn enter(&self, messages: u64) {
        let now = self.in_flight.fetch_add(messages, Ordering::SeqCst) + messages;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self, messages: u64) {
        self.in_flight.fetch_sub(messages, Ordering::SeqCst);
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reject(&self, error: Error) {
        let mut kept = self.rejected.lock();
        if kept.len() < KEPT_REJECTIONS {
            kept.push(error);
        }
    }

    fn report(&self) -> ConsumerReport {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        ConsumerReport {
            received: get(&self.received),
            executed: get(&self.executed),
            replayed: get(&self.replayed),
            acked: get(&self.acked),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            broker_errors: get(&self.broker_errors),
            grouped: get(&self.grouped),
            group_fallbacks: get(&self.group_fallbacks),
            max_in_flight: get(&self.max_in_flight),
            rejected: self
                .rejected
                .lock()
                .iter()
                .map(|e| (e.kind().to_owned(), e.to_string()))
                .collect(),
        }
    }
}

/// What a consumer did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ConsumerReport {
    /// Deliveries received (redeliveries included).
    pub received: u64,
    /// Handler runs (executions; replays do not run it).
    pub executed: u64,
    /// Deliveries answered from a recorded outcome without running the handler.
    pub replayed: u64,
    /// Deliveries acked after their outcome was recorded (dead letters not included).
    pub acked: u64,
    /// Deliveries handed back for another try (handler failed, or idem could not record).
    pub retried: u64,
    /// Messages sent to the dead letters (failing handlers and bad messages).
    pub dead_lettered: u64,
    /// Acks, retries or dead letters the broker refused (the message is delivered again).
    pub broker_errors: u64,
    /// Messages committed in a group of more than one ([`Consumer::group_commit`]).
    pub grouped: u64,
    /// Groups that rolled back and ran each of their messages alone.
    pub group_fallbacks: u64,
    /// The most handlers that ran at once.
    pub max_in_flight: u64,
    /// The first bad messages' errors, as `(kind, message)` (`bad_message`).
    pub rejected: Vec<(String, String)>,
}
