//! The in-process notifier: callers waiting for a key that an attempt in this process runs are
//! woken the moment that attempt ends, on every store, instead of at their next poll.
//!
//! One process-wide map from key to a [`Notify`], holding only keys somebody waits for. Keys
//! are not separated by store: two handles on different stores that happen to wait for the same
//! key wake each other, which costs one extra look at the store and nothing else. A wake with
//! nobody waiting reads one atomic counter and takes no lock, so the hot path pays nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::key::Key;

/// How many [`Waiting`] registrations hold a key, and their notifier.
type Registrations = (usize, Arc<Notify>);

static WAITERS: LazyLock<Mutex<HashMap<Key, Registrations>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// How many [`Waiting`] registrations exist (so [`wake`] can skip the lock when there are none).
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

/// A registration to be woken when `key` may have changed. Dropping it unregisters.
#[derive(Debug)]
pub(crate) struct Waiting {
    key: Key,
    notify: Arc<Notify>,
}

impl Waiting {
    /// Registers interest in `key`. Register (and enable a [`Notify::notified`] future) *before*
    /// the look at the store whose answer makes the caller wait, so a wake in between is kept.
    pub(crate) fn on(key: Key) -> Self {
        // Counted before the map holds it: a waker that reads zero cannot owe this waiter.
        REGISTERED.fetch_add(1, Ordering::SeqCst);
        let mut map = WAITERS.lock();
        let (count, notify) = map.entry(key).or_default();
        *count += 1;
        let notify = notify.clone();
        drop(map);
        Self { key, notify }
    }

    /// The notifier to wait on (a handle of its own, so the registration can be replaced while
    /// a wait on it is pending).
    pub(crate) fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // Counted, not judged by the `Arc`'s count: handles from `notifier` may outlive this.
        let mut map = WAITERS.lock();
        if let Some((count, _)) = map.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.key);
            }
        }
        drop(map);
        REGISTERED.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Wakes everyone in this process waiting for `key`: an attempt of it ended (completed, failed,
/// cancelled, released) or it was forgotten.
pub(crate) fn wake(key: &Key) {
    if REGISTERED.load(Ordering::SeqCst) == 0 {
        return;
    }
    if let Some((_, notify)) = WAITERS.lock().get(key) {
        notify.notify_waiters();
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_reaches_a_waiter_registered_before_it() {
        let key = Key([7; 32]);
        let waiting = Waiting::on(key);
        let outliving = waiting.notifier();
        {
            let notify = waiting.notifier();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            wake(&key);
            tokio::time::timeout(Duration::from_secs(1), notified)
                .await
                .unwrap_or_else(|_| panic!("the wake was lost"));
        }
        drop(waiting);
        assert!(
            !WAITERS.lock().contains_key(&key),
            "unregistered on drop, even while a handle of its notifier lives on"
        );
        drop(outliving);
    }
}
