//! Change notifications for waiting callers and snapshot caches: one pub/sub connection per
//! store, subscribed to the store's channel (`<prefix>changes`, which every completion, forget,
//! release and stream append publishes the key's hex on, inside its script), fanned out to every
//! waiter through a broadcast channel and to every watching cache ([`ChangeSink`]).
//!
//! The subscriber starts on the first wait or watch, reconnects with backoff after losing its
//! connection (trying each known node in turn: on a cluster, any node hears every publish), and
//! then tells every cache to drop everything, since messages in between are lost. While it is
//! down, waiters poll and caches fall back to their time bound. It stops when the store is
//! dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::key::Key;
use crate::store::ChangeSink;

/// The caches that watch one store.
type Sinks = Arc<Mutex<Vec<Weak<dyn ChangeSink>>>>;

/// How many notifications a slow waiter may fall behind before it is woken spuriously.
const CAPACITY: usize = 1024;

/// How long a subscription attempt may take before the next node is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared subscriber of one store.
#[derive(Debug)]
pub(super) struct Notifier {
    nodes: Arc<Vec<redis::Client>>,
    channel: String,
    tx: broadcast::Sender<Option<Key>>,
    up: Arc<AtomicBool>,
    task: Mutex<Option<JoinHandle<()>>>,
    sinks: Sinks,
}

impl Notifier {
    pub(super) fn new(nodes: Vec<redis::Client>, channel: String) -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self {
            nodes: Arc::new(nodes),
            channel,
            tx,
            up: Arc::new(AtomicBool::new(false)),
            task: Mutex::new(None),
            sinks: Arc::default(),
        }
    }

    /// Adds a cache to tell of every change, and starts the subscriber.
    pub(super) fn watch(&self, sink: Weak<dyn ChangeSink>) {
        let mut sinks = self.sinks.lock();
        sinks.retain(|s| s.strong_count() > 0);
        sinks.push(sink);
        drop(sinks);
        self.start();
    }

    /// Whether the subscription is currently up.
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Spawns the subscriber task unless it runs.
    pub(super) fn start(&self) {
        let mut task = self.task.lock();
        if task.as_ref().is_none_or(JoinHandle::is_finished) {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                *task = Some(handle.spawn(subscribe(
                    self.nodes.clone(),
                    self.channel.clone(),
                    Fanout {
                        waiters: self.tx.clone(),
                        sinks: self.sinks.clone(),
                    },
                    UpGuard(self.up.clone()),
                )));
            }
        }
    }

    /// Waits until `key` changes (a message names it), the subscriber lags or reconnects, or
    /// `max` passes. While the subscription is down this is a plain sleep: the caller polls.
    pub(super) async fn wait(&self, key: &Key, max: Duration) {
        let mut rx = self.tx.subscribe();
        self.start();
        if !self.is_up() {
            tokio::time::sleep(max).await;
            return;
        }
        let _ = tokio::time::timeout(max, async {
            loop {
                match rx.recv().await {
                    Ok(Some(changed)) if changed == *key => return,
                    Ok(None) => return,
                    Ok(Some(_)) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
    }

    /// Stops the subscriber.
    pub(super) fn close(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().take() {
            task.abort();
        }
    }
}

/// Marks the subscription down when its task ends, however it ends.
struct UpGuard(Arc<AtomicBool>);

impl Drop for UpGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Where the subscriber sends what it hears: waiters and watching caches.
struct Fanout {
    waiters: broadcast::Sender<Option<Key>>,
    sinks: Sinks,
}

impl Fanout {
    /// `None`: messages may have been lost.
    fn send(&self, key: Option<Key>) {
        // Not under the lock: a sink may call back into the store (`watch`).
        let sinks: Vec<_> = self.sinks.lock().iter().filter_map(Weak::upgrade).collect();
        for sink in sinks {
            sink.changed(key.as_ref());
        }
        let _ = self.waiters.send(key);
    }
}

/// Subscribes on one node: the message stream, once the subscription is confirmed.
async fn connect(client: &redis::Client, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// The subscriber task: subscribe, forward every message; on failure, back off and try the
/// next node.
async fn subscribe(nodes: Arc<Vec<redis::Client>>, channel: String, out: Fanout, guard: UpGuard) {
    let mut backoff = Duration::from_millis(50);
    let mut turn = 0usize;
    loop {
        let Some(client) = nodes.get(turn % nodes.len().max(1)) else {
            return;
        };
        turn = turn.wrapping_add(1);
        let pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, connect(client, &channel)).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                tracing::debug!(%error, "idem: cannot subscribe to Redis changes; polling meanwhile");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                tracing::debug!("idem: subscribing to Redis changes timed out; polling meanwhile");
                continue;
            }
        };
        guard.0.store(true, Ordering::SeqCst);
        // Whatever changed while no subscription was up went unheard.
        out.send(None);
        backoff = Duration::from_millis(50);
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let payload = msg.get_payload_bytes();
            if let Some(key) = std::str::from_utf8(payload).ok().and_then(Key::from_hex) {
                out.send(Some(key));
            }
        }
        tracing::debug!("idem: Redis change subscription lost; polling meanwhile");
        guard.0.store(false, Ordering::SeqCst);
        out.send(None);
        tokio::time::sleep(backoff).await;
    }
}
