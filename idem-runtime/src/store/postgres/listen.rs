//! Change notifications for waiting callers and snapshot caches: one `LISTEN` connection per
//! store, fanned out to every waiter through a broadcast channel and to every watching cache
//! ([`ChangeSink`]); polling and the caches' time bound are the fallback while it is down.
//!
//! The listener starts on the first wait or the first claim of a store that a cache watches
//! (a store with neither holds no extra connection), runs on its own one-connection pool (so
//! it never takes a slot of the store's pool), reconnects with backoff after losing its
//! connection (then tells every cache to drop everything: notifications in between are
//! lost), and stops when the store is dropped. A notification sent between a claim that saw
//! `running` and the waiter subscribing is missed; the runtime's wait is bounded by a short
//! poll interval, so that costs at most one poll period, never correctness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::key::Key;
use crate::store::ChangeSink;

/// The caches that watch one store.
type Sinks = Arc<Mutex<Vec<Weak<dyn ChangeSink>>>>;

/// How many notifications a slow waiter may fall behind before it is woken spuriously.
const CAPACITY: usize = 1024;

/// The shared listener of one store.
#[derive(Debug)]
pub(super) struct Notifier {
    pool: PgPool,
    channel: String,
    tx: broadcast::Sender<Option<Key>>,
    up: Arc<AtomicBool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The listener task is running (set when spawned, cleared when it ends).
    alive: Arc<AtomicBool>,
    sinks: Sinks,
    /// Some cache watches (so the listener must run).
    watched: AtomicBool,
    /// `close` was called: never start again.
    closed: AtomicBool,
}

/// Marks the listener down and dead when its task ends, however it ends (including runtime
/// shutdown).
struct UpGuard {
    up: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
}

impl Drop for UpGuard {
    fn drop(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        self.alive.store(false, Ordering::SeqCst);
    }
}

impl Notifier {
    pub(super) fn new(pool: PgPool, channel: String) -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self {
            pool,
            channel,
            tx,
            up: Arc::new(AtomicBool::new(false)),
            task: Mutex::new(None),
            alive: Arc::new(AtomicBool::new(false)),
            sinks: Arc::default(),
            watched: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Adds a cache to tell of every change, and starts the listener if a runtime is at hand
    /// (else the next claim starts it, see [`Self::keep_listening`]).
    pub(super) fn watch(&self, sink: Weak<dyn ChangeSink>) {
        let mut sinks = self.sinks.lock();
        sinks.retain(|s| s.strong_count() > 0);
        sinks.push(sink);
        drop(sinks);
        self.watched.store(true, Ordering::Relaxed);
        self.start();
    }

    /// Restarts the listener if a cache watches and the task is not running: two atomic loads
    /// on the hot path.
    pub(super) fn keep_listening(&self) {
        if self.watched.load(Ordering::Relaxed) && !self.alive.load(Ordering::Relaxed) {
            self.start();
        }
    }

    /// Whether the `LISTEN` connection is currently up.
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Subscribes to changes, starting (or restarting) the listener task if needed.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Option<Key>> {
        let rx = self.tx.subscribe();
        self.start();
        rx
    }

    /// Spawns the listener task unless it runs.
    fn start(&self) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut task = self.task.lock();
        if task.as_ref().is_none_or(JoinHandle::is_finished) {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                self.alive.store(true, Ordering::SeqCst);
                *task = Some(handle.spawn(listen(
                    self.pool.clone(),
                    self.channel.clone(),
                    Fanout {
                        waiters: self.tx.clone(),
                        sinks: self.sinks.clone(),
                    },
                    UpGuard {
                        up: self.up.clone(),
                        alive: self.alive.clone(),
                    },
                )));
            }
        }
    }

    /// Waits until `key` changes (a notification names it), the listener lags, or `max` passes.
    /// While the listener is down this is a plain sleep: the caller polls.
    pub(super) async fn wait(&self, key: &Key, max: Duration) {
        let mut rx = self.subscribe();
        if !self.is_up() {
            tokio::time::sleep(max).await;
            return;
        }
        let _ = tokio::time::timeout(max, async {
            loop {
                match rx.recv().await {
                    Ok(Some(changed)) if changed == *key => return,
                    // Everyone looks again (the listener reconnected).
                    Ok(None) => return,
                    Ok(Some(_)) => {}
                    // Missed some: the key may be among them.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
    }
}

impl Notifier {
    /// Stops the listener and closes its connection.
    pub(super) async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
        self.pool.close().await;
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().take() {
            task.abort();
        }
    }
}

/// Where the listener sends what it hears: waiters and watching caches.
struct Fanout {
    waiters: broadcast::Sender<Option<Key>>,
    sinks: Sinks,
}

impl Fanout {
    /// `None`: notifications may have been lost.
    fn send(&self, key: Option<Key>) {
        // Not under the lock: a sink may call back into the store (`watch`).
        let sinks: Vec<_> = self.sinks.lock().iter().filter_map(Weak::upgrade).collect();
        for sink in sinks {
            sink.changed(key.as_ref());
        }
        let _ = self.waiters.send(key);
    }
}

/// The listener task: connect, `LISTEN`, forward every notification; on failure, back off and
/// reconnect.
/// `guard` lives as long as the task: it marks the listener down and dead however the task ends.
async fn listen(pool: PgPool, channel: String, out: Fanout, guard: UpGuard) {
    let up = guard.up.clone();
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(error) => {
                tracing::debug!(%error, "idem: cannot connect the LISTEN connection; polling meanwhile");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if let Err(error) = listener.listen(&channel).await {
            tracing::debug!(%error, "idem: LISTEN failed; polling meanwhile");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        up.store(true, Ordering::SeqCst);
        // Whatever changed while no listener was up went unheard.
        out.send(None);
        backoff = Duration::from_millis(50);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Some(key) = Key::from_hex(n.payload()) {
                        out.send(Some(key));
                    }
                }
                // The connection dropped and was re-established (notifications in between are
                // lost): wake every waiter so it looks again, and empty every cache.
                Ok(None) => out.send(None),
                Err(error) => {
                    tracing::debug!(%error, "idem: LISTEN connection lost; polling meanwhile");
                    break;
                }
            }
        }
        up.store(false, Ordering::SeqCst);
        tokio::time::sleep(backoff).await;
    }
}
