//! `Idem`: the cheap-to-clone handle that runs calls against one store.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::SnapshotCache;
use crate::call::Call;
use crate::call_error::CallError;
use crate::error::Error;
use crate::execute::{self, Errors};
use crate::handle::Handle;
use crate::key::Key;
use crate::record::{AttemptLog, Record};
use crate::replay::{CacheErrorsWhen, NoErrorCache};
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::stream::Streamed;

/// The handle: a store, a snapshot cache, and this worker's name. Clone it freely.
///
/// ```
/// use idem_runtime::{Call, Error, Idem};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
/// let idem = Idem::open("memory:").await?;
/// let mut runs = 0;
/// for _ in 0..3 {
///     let n: u32 = idem
///         .call(Call::new("charge").key(&("order-42", 1999_u64)), || async {
///             runs += 1;
///             Ok::<_, Error>(7)
///         })
///         .await?;
///     assert_eq!(n, 7);
/// }
/// assert_eq!(runs, 1); // ran once, replayed twice
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Idem {
    pub(crate) inner: Arc<Handle>,
}

impl fmt::Debug for Idem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idem")
            .field("store", &self.inner.store.backend())
            .field("cache", &self.inner.cache)
            .field("worker", &self.inner.worker)
            .finish()
    }
}

/// Options for building an [`Idem`].
#[derive(Debug)]
pub struct IdemBuilder {
    store: Arc<dyn Store>,
    cache_capacity: usize,
    cache_bytes: u64,
    cache_staleness: Duration,
    worker: Option<String>,
    max_snapshot_bytes: usize,
}

impl IdemBuilder {
    /// How many completed snapshots the process keeps (default 10,000); 0 turns the cache off.
    #[must_use]
    pub fn cache_capacity(mut self, entries: usize) -> Self {
        self.cache_capacity = entries;
        self
    }

    /// How many bytes of snapshots the process keeps (default 64 MiB, counting each entry's
    /// snapshot plus a fixed overhead); the least recently useful entries go first, and a
    /// snapshot larger than a quarter of the budget is not cached.
    #[must_use]
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// The longest a cached snapshot is replayed without asking the store (default 30 s). On a
    /// store that pushes changes (PostgreSQL), another process's `forget` reaches this cache
    /// when its notification arrives (milliseconds); this bound is the worst case, for stores
    /// that cannot push (SQLite) and while the PostgreSQL listener is disconnected.
    #[must_use]
    pub fn cache_staleness(mut self, bound: Duration) -> Self {
        self.cache_staleness = bound;
        self
    }

    /// This worker's name in the attempts log (default `host/pid`).
    #[must_use]
    pub fn worker(mut self, name: impl Into<String>) -> Self {
        self.worker = Some(name.into());
        self
    }

    /// The largest encoded snapshot accepted (default 16 MiB); a larger result fails its call
    /// with [`Error::SnapshotTooLarge`].
    #[must_use]
    pub fn max_snapshot_bytes(mut self, limit: usize) -> Self {
        self.max_snapshot_bytes = limit;
        self
    }

    /// Builds the handle.
    pub fn build(self) -> Idem {
        let cache = (self.cache_capacity > 0).then(|| {
            Arc::new(SnapshotCache::new(
                self.cache_capacity,
                self.cache_bytes,
                self.cache_staleness,
            ))
        });
        if let Some(cache) = &cache {
            // Another process's `forget` reaches this cache as soon as the store hears of it.
            let sink: Arc<dyn crate::store::ChangeSink> = cache.clone();
            self.store.watch(Arc::downgrade(&sink));
        }
        Idem {
            inner: Arc::new(Handle {
                store: self.store,
                cache,
                worker: self.worker.unwrap_or_else(default_worker),
                max_snapshot_bytes: self.max_snapshot_bytes,
                ledger: crate::ledger::Ledger::default(),
            }),
        }
    }
}

/// `host/pid`: which machine and process ran an attempt, for the attempts log.
fn default_worker() -> String {
    let host = gethostname::gethostname();
    let host = host.to_string_lossy();
    let host = if host.trim().is_empty() {
        "localhost".into()
    } else {
        host
    };
    format!("{}/{}", host.trim(), std::process::id())
}

impl Idem {
    /// A handle on `store` with default options.
    pub fn new(store: impl Store) -> Self {
        Self::builder(Arc::new(store)).build()
    }

    /// Options for a handle on `store`.
    pub fn builder(store: Arc<dyn Store>) -> IdemBuilder {
        IdemBuilder {
            store,
            cache_capacity: 10_000,
            cache_bytes: 64 << 20,
            cache_staleness: Duration::from_secs(30),
            worker: None,
            max_snapshot_bytes: 16 << 20,
        }
    }

    /// A handle on a new in-memory store.
    pub fn memory() -> Self {
        Self::new(MemoryStore::new())
    }

    /// Opens the store a URL names (`memory:`, `sqlite://path`, `postgres://...`), with default
    /// options. Use [`crate::store::open`] and [`Idem::builder`] for others.
    pub async fn open(url: &str) -> Result<Self, Error> {
        Ok(Self::builder(crate::store::open(url).await?).build())
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// This worker's name in the attempts log.
    pub fn worker(&self) -> &str {
        &self.inner.worker
    }

    /// Runs `body` at most once per key: the first caller runs it and records its `Ok` value;
    /// every later caller with the same key gets that value back. An `Err` is not recorded: the
    /// record becomes `failed` and the next call runs again. Errors of idem itself (store down,
    /// key reuse, ...) reach the caller through `E: From<Error>`; for an error type that cannot
    /// have that impl (`std::io::Error`), use [`Idem::try_call`].
    ///
    /// Dropping the returned future while the body runs (a timeout around it) releases the
    /// claim at once, so a retry runs without waiting for the lease.
    pub fn call<'a, T, E, F, Fut>(
        &'a self,
        call: Call,
        body: F,
    ) -> impl Future<Output = Result<T, E>> + use<'a, T, E, F, Fut>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error> + fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let errors = Errors {
            from_idem: E::from,
            policy: NoErrorCache,
        };
        self.call_with(call, errors, body)
    }

    /// Like [`Idem::call`], for a body whose error type cannot carry idem's errors: the result's
    /// error is [`CallError::Body`] with the body's error, or [`CallError::Idem`] with idem's.
    ///
    /// ```
    /// use idem_runtime::{Call, CallError, Idem};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let idem = Idem::memory();
    /// let read = idem.try_call(Call::new("read").key("/no/such/file"), || async {
    ///     std::fs::read_to_string("/no/such/file")
    /// });
    /// assert!(matches!(read.await, Err(CallError::Body(e)) if e.kind() == std::io::ErrorKind::NotFound));
    /// # }
    /// ```
    pub fn try_call<'a, T, E, F, Fut>(
        &'a self,
        call: Call,
        body: F,
    ) -> impl Future<Output = Result<T, CallError<E>>> + use<'a, T, E, F, Fut>
    where
        T: Serialize + DeserializeOwned,
        E: fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let errors = Errors {
            from_idem: CallError::Idem,
            policy: NoErrorCache,
        };
        let body = || async move { body().await.map_err(CallError::Body) };
        self.call_with(call, errors, body)
    }

    /// Like [`Idem::call`], but every `Err` is recorded and replayed too (Stripe-style), so a
    /// definitive failure (a declined card, a rejected prompt) is not retried. An error that
    /// carries one of idem's own errors (`InProgress`, a store failure, ...) is never recorded:
    /// it describes that moment, not the operation.
    pub fn call_caching_errors<'a, T, E, F, Fut>(
        &'a self,
        call: Call,
        body: F,
    ) -> impl Future<Output = Result<T, E>> + use<'a, T, E, F, Fut>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error> + fmt::Display + Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_caching_errors_if(call, |_: &E| true, body)
    }

    /// Like [`Idem::call_caching_errors`], recording only the errors `permanent` accepts; the
    /// others leave a `failed` record that the next call retries.
    ///
    /// ```
    /// use idem_runtime::{Call, Idem};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Debug, thiserror::Error, Serialize, Deserialize)]
    /// enum ChargeError {
    ///     #[error("card declined")]
    ///     Declined,
    ///     #[error("payment provider timed out")]
    ///     Timeout,
    ///     #[error(transparent)]
    ///     Idem(#[from] idem_runtime::Error),
    /// }
    ///
    /// impl ChargeError {
    ///     fn is_permanent(&self) -> bool {
    ///         matches!(self, ChargeError::Declined)
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let idem = Idem::memory();
    /// let charge = |outcome: Result<u32, ChargeError>| {
    ///     idem.call_caching_errors_if(Call::new("charge").key("order-1"), ChargeError::is_permanent, || async { outcome })
    /// };
    /// assert!(matches!(charge(Err(ChargeError::Timeout)).await, Err(ChargeError::Timeout))); // not kept
    /// assert!(matches!(charge(Err(ChargeError::Declined)).await, Err(ChargeError::Declined))); // kept
    /// assert!(matches!(charge(Ok(7)).await, Err(ChargeError::Declined))); // replayed
    /// # }
    /// ```
    pub fn call_caching_errors_if<'a, T, E, P, F, Fut>(
        &'a self,
        call: Call,
        permanent: P,
        body: F,
    ) -> impl Future<Output = Result<T, E>> + use<'a, T, E, P, F, Fut>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error> + fmt::Display + Serialize + DeserializeOwned,
        P: Fn(&E) -> bool,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let errors = Errors {
            from_idem: E::from,
            policy: CacheErrorsWhen::new(permanent),
        };
        self.call_with(call, errors, body)
    }

    /// Runs a body that returns a stream of chunks (an LLM's tokens) once per key, like
    /// [`Idem::call`] does for a value. The first call runs the body and its caller reads the
    /// chunks as the body yields them, while idem journals them in the store in batches
    /// ([`StreamOptions`](crate::StreamOptions)); the end of the stream records it. A later call
    /// replays the chunks in order without running the body; a call made while the stream is
    /// being generated follows it live (the chunks so far, then the new ones as they are
    /// journaled) instead of generating it a second time.
    ///
    /// An `Err` from the body, or an `Err` item that ends its stream, marks the record failed
    /// (the next call runs again), keeping the chunks journaled so far for inspection; a caller
    /// that drops the stream part-way cancels the attempt as dropping any call does. A follower
    /// whose attempt ends without completing the stream ends with
    /// [`Error::StreamInterrupted`] after the chunks it received. Chunks are
    /// `Serialize + DeserializeOwned`; the body's stream must be `Send + 'static`.
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// use idem_runtime::{Call, Error, Idem, Streamed};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// let idem = Idem::memory();
    /// let draft = || async {
    ///     let tokens = ["Hello", ", ", "world"].map(|t| Ok::<_, Error>(t.to_owned()));
    ///     Ok::<_, Error>(Streamed::new(stream::iter(tokens)))
    /// };
    /// let first: Vec<String> = idem
    ///     .stream(Call::new("draft").key("prompt-1"), draft)
    ///     .await?
    ///     .map(|t| t.unwrap())
    ///     .collect()
    ///     .await;
    /// // The second call replays the recorded chunks; its body does not run.
    /// let again: Vec<String> = idem
    ///     .stream(Call::new("draft").key("prompt-1"), || async {
    ///         Err::<Streamed<String, Error>, _>(Error::Config("not run".into()))
    ///     })
    ///     .await?
    ///     .map(|t| t.unwrap())
    ///     .collect()
    ///     .await;
    /// assert_eq!(first, again);
    /// # Ok(()) }
    /// ```
    pub fn stream<'a, C, E, F, Fut>(
        &'a self,
        call: Call,
        body: F,
    ) -> impl Future<Output = Result<Streamed<C, E>, E>> + use<'a, C, E, F, Fut>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
        E: From<Error> + fmt::Display + Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Streamed<C, E>, E>>,
    {
        let errors = Errors {
            from_idem: E::from,
            policy: NoErrorCache,
        };
        self.stream_with(call, errors, body)
    }

    /// [`Idem::stream`], recording an error that ends the stream (or that the body returns)
    /// when `permanent` says so: later calls replay the chunks, then that error, instead of
    /// generating the stream again.
    pub fn stream_caching_errors_if<'a, C, E, P, F, Fut>(
        &'a self,
        call: Call,
        permanent: P,
        body: F,
    ) -> impl Future<Output = Result<Streamed<C, E>, E>> + use<'a, C, E, P, F, Fut>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
        E: From<Error> + fmt::Display + Serialize + DeserializeOwned + Send + 'static,
        P: Fn(&E) -> bool + Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Streamed<C, E>, E>>,
    {
        let errors = Errors {
            from_idem: E::from,
            policy: CacheErrorsWhen::new(permanent),
        };
        self.stream_with(call, errors, body)
    }

    pub(crate) fn stream_with<'a, C, E, P, F, Fut>(
        &'a self,
        call: Call,
        errors: Errors<E, P>,
        body: F,
    ) -> impl Future<Output = Result<Streamed<C, E>, E>> + use<'a, C, E, P, F, Fut>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
        E: fmt::Display + Send + 'static,
        P: crate::replay::ErrorPolicy<E> + Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Streamed<C, E>, E>>,
    {
        Box::pin(crate::stream::run::run(
            &self.inner,
            call.keyed(),
            errors,
            body,
        ))
    }

    /// Runs a step in the caller's own sqlx transaction (or on its connection), on SQLite or
    /// PostgreSQL: the claim, the body's writes through `conn` and the recorded result commit or
    /// roll back together with the rest of the caller's transaction; idem adds no commit of its
    /// own. A later call of the key replays the result without running the body, and without
    /// writing. The handle's store must be the same database (its tables may live in another
    /// schema: `PostgresStore::builder(url).schema("idem")`, or `from_pool` with the
    /// application's pool).
    ///
    /// On SQLite, open the transaction with `pool.begin_with("BEGIN IMMEDIATE")` when other
    /// processes write the same file: the claim reads, then writes, and a deferred transaction
    /// that must upgrade its read lock to a write lock fails at once with "database is locked"
    /// when another connection writes meanwhile (the busy timeout does not apply to it).
    ///
    /// The body takes the connection back and returns its future boxed, as sqlx's own
    /// `Connection::transaction` does (`|tx| Box::pin(async move { ... })`): so the step's future
    /// is `Send` and can be spawned. `#[idempotent(tx = ...)]` writes the same without the box.
    ///
    /// Exactly-once for the writes that go through `conn`: a crash before the caller's commit
    /// leaves neither the claim nor the writes; after it, both. A result that cannot be
    /// recorded (over the snapshot limit) is an error, so the caller rolls back.
    ///
    /// ```
    /// use idem_runtime::{Call, Error, Idem};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// let idem = Idem::open("sqlite::memory:").await?;
    /// let pool = idem.store().sql_store().and_then(|s| match s {
    ///     idem_runtime::store::SqlStore::Sqlite(s) => Some(s.pool().clone()),
    ///     _ => None,
    /// }).unwrap();
    /// sqlx::query("CREATE TABLE orders (id TEXT)").execute(&pool).await?;
    /// for _ in 0..3 {
    ///     let mut tx = pool.begin().await?;
    ///     let rows: u64 = idem
    ///         .step(Call::new("save_order").key("o-1"), &mut tx, |tx| {
    ///             Box::pin(async move {
    ///                 let done = sqlx::query("INSERT INTO orders (id) VALUES ('o-1')")
    ///                     .execute(&mut **tx)
    ///                     .await?;
    ///                 Ok::<_, Error>(done.rows_affected())
    ///             })
    ///         })
    ///         .await?;
    ///     tx.commit().await?;
    ///     assert_eq!(rows, 1);
    /// }
    /// let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&pool).await?;
    /// assert_eq!(count, 1);
    /// # Ok(()) }
    /// ```
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
    pub async fn step<C, T, E, F>(&self, call: Call, conn: &mut C, body: F) -> Result<T, E>
    where
        C: crate::step::StepConnection + ?Sized,
        T: Serialize + DeserializeOwned,
        E: From<Error> + fmt::Display,
        F: for<'c> FnOnce(&'c mut C) -> futures_util::future::BoxFuture<'c, Result<T, E>>,
    {
        self.step_keyed(call.keyed(), conn, body).await
    }

    /// [`Idem::step`] for a call already keyed (or that failed to key).
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) async fn step_keyed<C, T, E, F>(
        &self,
        call: Result<crate::call::KeyedCall, Error>,
        conn: &mut C,
        body: F,
    ) -> Result<T, E>
    where
        C: crate::step::StepConnection + ?Sized,
        T: Serialize + DeserializeOwned,
        E: From<Error> + fmt::Display,
        F: for<'c> FnOnce(&'c mut C) -> futures_util::future::BoxFuture<'c, Result<T, E>>,
    {
        let errors = Errors {
            from_idem: E::from,
            policy: NoErrorCache,
        };
        let conn_of = crate::step::conn_of::<C>();
        crate::step::run(&self.inner, call, conn, conn_of, errors, body).await
    }

    /// The first half of [`Idem::step`], for callers that cannot pass their writes as a
    /// closure: claims the key in the caller's transaction and says whether to replay or to do
    /// the writes and [`StepClaim::complete`](crate::StepClaim::complete) them there.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
    pub async fn begin_step<C, T>(
        &self,
        call: Call,
        conn: &mut C,
    ) -> Result<crate::step::StepStart<T>, Error>
    where
        C: crate::step::StepConnection + ?Sized,
        T: DeserializeOwned,
    {
        let errors = Errors {
            from_idem: std::convert::identity,
            policy: NoErrorCache,
        };
        let conn_of = crate::step::conn_of::<C>();
        match crate::step::begin(&self.inner, call.keyed(), conn, conn_of, &errors).await? {
            crate::step::Begun::Replayed(value) => value.map(crate::step::StepStart::Replayed),
            crate::step::Begun::Claimed(claim) => Ok(crate::step::StepStart::Claimed(claim)),
        }
    }

    /// The engine behind every call: `from_idem` makes the function's error type from idem's,
    /// `policy` is its `cache_errors`. The key is computed now; the engine's state (claim loop,
    /// lease, recording) is boxed, once, so the future a caller holds (and nests inside its own
    /// futures) is a few words plus the body, not kilobytes.
    pub(crate) fn call_with<'a, T, E, P, F, Fut>(
        &'a self,
        call: Call,
        errors: Errors<E, P>,
        body: F,
    ) -> impl Future<Output = Result<T, E>> + use<'a, T, E, P, F, Fut>
    where
        T: Serialize + DeserializeOwned,
        E: fmt::Display,
        P: crate::replay::ErrorPolicy<E>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        Box::pin(execute::run(&self.inner, call.keyed(), errors, body))
    }

    /// Writes the cost that this handle's replays avoided (counted in memory, written every few
    /// seconds while replays happen) to the store now. Call it before a short-lived process
    /// exits; what a killed process had not written yet is lost (the ledger then undercounts
    /// what was avoided, never overcounts).
    pub async fn flush_costs(&self) -> Result<(), Error> {
        crate::ledger::flush(&self.inner).await
    }

    /// The cost ledger by operation (only `op`'s, if given) and unit: what attempts spent (as
    /// their bodies reported it with [`CallInfo::add_cost`](crate::CallInfo::add_cost)) and
    /// what replays avoided, after writing this handle's pending avoided costs. Spent costs are
    /// read from the attempts logs of the records the store still keeps (purge forgets them
    /// with their records); avoided costs are kept by operation and unit.
    pub async fn costs(&self, op: Option<&str>) -> Result<Vec<crate::store::CostLine>, Error> {
        self.flush_costs().await?;
        self.inner.store.costs(op).await
    }

    /// Forgets a key: the next call runs again. This process's cache forgets it at once; other
    /// processes' caches when the store's notification reaches them (PostgreSQL), and in any
    /// case within their staleness bound ([`IdemBuilder::cache_staleness`]).
    ///
    /// A key whose attempt is running with a live lease is refused with [`Error::Running`]
    /// (nothing is deleted): forgetting it would let a second attempt run beside the live one.
    /// Wait for it, `release` it first, or use [`Idem::force_forget`].
    pub async fn forget(&self, key: &Key) -> Result<bool, Error> {
        self.forget_key(key, false).await
    }

    /// Forgets a key even while its attempt holds a live lease: the next call runs again at
    /// once, possibly beside the attempt still running (whose completion is then fenced only if
    /// the new attempt claimed the key first). Otherwise as [`Idem::forget`].
    pub async fn force_forget(&self, key: &Key) -> Result<bool, Error> {
        self.forget_key(key, true).await
    }

    async fn forget_key(&self, key: &Key, force: bool) -> Result<bool, Error> {
        use crate::store::ChangeSink;
        // A pushed change, not a plain removal: the epoch bump keeps a claim in flight, which
        // may have read the snapshot before the delete, from caching it after (see `cache.rs`).
        // Before, so such a claim is already covered; after, for one that began meanwhile.
        if let Some(cache) = &self.inner.cache {
            cache.changed(Some(key));
        }
        let existed = self.inner.store.forget(key, force).await;
        if let Some(cache) = &self.inner.cache {
            cache.changed(Some(key));
        }
        // A caller of this process waiting for the forgotten key claims it now.
        crate::waiters::wake(key);
        existed
    }

    /// Deletes every expired record, `batch` rows per store transaction so claims are never
    /// blocked for long. Running records whose lease expired more than `abandoned_after` ago
    /// count as expired. Returns how many were deleted.
    pub async fn purge_expired(&self, batch: u32, abandoned_after: Duration) -> Result<u64, Error> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let n = self
                .inner
                .store
                .purge_expired(batch, abandoned_after)
                .await?;
            total += n;
            if n < u64::from(batch) {
                return Ok(total);
            }
        }
    }

    /// Reads a key's record.
    pub async fn record(&self, key: &Key) -> Result<Option<Record>, Error> {
        self.inner.store.get(key).await
    }

    /// Reads a key's attempts log, oldest first.
    pub async fn attempts(&self, key: &Key) -> Result<Vec<AttemptLog>, Error> {
        self.inner.store.attempts(key).await
    }
}
