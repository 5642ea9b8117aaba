//! The lease of a running attempt: the heartbeat that renews it, and the signal a body sees when
//! the attempt lost it (taken over or released by an operator).
//!
//! Heartbeats do not run inside the call's own future: a body that blocks its thread (a
//! synchronous client, from its very first line) would starve them. Nor does each call spawn a
//! task of its own: that costs a spawn and thread wake-ups per call (docs/performance.md). Instead each runtime worker thread has one *keeper* task that renews every
//! lease registered from that thread. A registration is a lock, a map insert and an atomic read;
//! the keeper is woken only when the new lease is due before everything it already waits for.
//! Once it has run, the keeper is an ordinary task woken by its timer, which any worker can
//! run, so on a multi-thread runtime a body blocking its thread does not stop its heartbeat. On
//! a current-thread runtime the keeper shares the one thread with the body: a body that blocks
//! that thread for longer than its lease can still be taken over.
//!
//! A lease is unregistered the moment the body ends or the call is dropped, so a dropped call
//! never keeps a lease alive. Needs a Tokio runtime with timers (checked before the body runs:
//! without one the call fails in Tokio's panic, never with the body running unprotected).

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::call::Options;
use crate::key::Key;
use crate::store::{AttemptRef, Fence, Store};

/// Whether an attempt still owns its key. Read it from a body through
/// [`CallInfo::lease_lost`](crate::CallInfo::lease_lost) and
/// [`CallInfo::on_lease_lost`](crate::CallInfo::on_lease_lost).
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseSignal(CancellationToken);

impl LeaseSignal {
    pub(crate) fn is_lost(&self) -> bool {
        self.0.is_cancelled()
    }

    pub(crate) fn lost(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.0.clone().cancelled_owned()
    }

    fn fire(&self) {
        self.0.cancel();
    }
}

/// How a body run under a lease ended.
#[derive(Debug)]
pub(crate) enum Ran<T> {
    /// The body finished with this output.
    Finished(T),
    /// The lease was lost and the call asked to abort the body then
    /// ([`Options::abort_on_lease_loss`]); the body was dropped.
    Aborted,
}

/// A lease to keep alive: everything a renewal needs, owned.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) op: Cow<'static, str>,
    pub(crate) key: Key,
    pub(crate) attempt: u64,
    pub(crate) lease: Duration,
    pub(crate) signal: LeaseSignal,
}

impl Heartbeat {
    fn period(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(5))
    }

    /// Renews the lease once. Returns whether the attempt still owns it (a failed renewal
    /// counts as owned: it is retried at the next beat).
    async fn renew(&self) -> bool {
        let attempt = AttemptRef {
            op: &self.op,
            key: &self.key,
            attempt: self.attempt,
        };
        match self.store.renew(&attempt, self.lease).await {
            Ok(Fence::Owned) => true,
            Ok(Fence::Lost) => false,
            Err(error) => {
                tracing::warn!(%error, "idem: heartbeat failed; retrying at the next beat");
                true
            }
        }
    }

    /// The attempt lost its lease while its call still runs.
    fn lost(&self) {
        tracing::warn!(
            attempt = self.attempt,
            "idem: lease lost to a later attempt (or released); this attempt's completion will be fenced"
        );
        self.signal.fire();
    }
}

/// The leases one keeper renews, shared with the calls that register them.
#[derive(Debug, Default)]
struct Leases {
    state: Mutex<LeaseState>,
    /// Wakes the keeper for a lease due before its current deadline.
    wake: Notify,
    /// The keeper's next wake-up, in ms since `epoch` (`u64::MAX`: none).
    deadline_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
    /// Cleared when the keeper task ends (its runtime shut down): the next call starts another.
    alive: AtomicBool,
}

#[derive(Debug, Default)]
struct LeaseState {
    next_id: u64,
    live: HashMap<u64, Arc<Heartbeat>>,
    /// Registered since the keeper last looked: `(first beat, id)`.
    new: Vec<(Instant, u64)>,
}

impl Leases {
    fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(Instant::now)
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch()).as_millis()).unwrap_or(u64::MAX)
    }
}

thread_local! {
    /// This thread's keeper (per thread: a worker thread belongs to one runtime).
    static KEEPER: RefCell<Option<Arc<Leases>>> = const { RefCell::new(None) };
}

/// Registered with a keeper until dropped.
struct Registration {
    leases: Arc<Leases>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.leases.state.lock().live.remove(&self.id);
    }
}

/// Registers `heartbeat` with this thread's keeper, starting one if needed. The flag says that
/// the keeper was started or woken from this thread, so it waits in this worker's LIFO slot.
fn register(heartbeat: Arc<Heartbeat>) -> (Registration, bool) {
    let (leases, started) = KEEPER.with(|slot| {
        let mut slot = slot.borrow_mut();
        match &*slot {
            Some(leases) if leases.alive.load(Ordering::Acquire) => (leases.clone(), false),
            _ => {
                let leases = Arc::new(Leases {
                    deadline_ms: AtomicU64::new(u64::MAX),
                    alive: AtomicBool::new(true),
                    ..Leases::default()
                });
                tokio::spawn(keep(Alive(leases.clone())));
                *slot = Some(leases.clone());
                (leases, true)
            }
        }
    });
    let first = Instant::now() + heartbeat.period();
    let id = {
        let mut state = leases.state.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.live.insert(id, heartbeat);
        state.new.push((first, id));
        id
    };
    let woken = leases.ms(first) < leases.deadline_ms.load(Ordering::SeqCst);
    if woken {
        leases.wake.notify_one();
    }
    (Registration { leases, id }, started || woken)
}

/// Clears `alive` when the keeper task ends, however it ends.
struct Alive(Arc<Leases>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
    }
}

/// The keeper: renews each registered lease every third of its length until it is unregistered
/// or lost. Renewals run concurrently, so a slow store delays no other lease's beat.
///
/// Takes its `Alive` guard as an argument, so the guard is dropped even if the task is dropped
/// before its first poll (its runtime shutting down at once).
async fn keep(alive: Alive) {
    let leases = alive.0.clone();
    let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut renewals = FuturesUnordered::new();
    loop {
        let now = Instant::now();
        let beats: Vec<(u64, Arc<Heartbeat>)> = {
            let mut state = leases.state.lock();
            due.extend(state.new.drain(..).map(Reverse));
            let mut beats = Vec::new();
            while let Some(Reverse((at, id))) = due.peek().copied() {
                if at > now {
                    break;
                }
                due.pop();
                if let Some(heartbeat) = state.live.get(&id) {
                    beats.push((id, heartbeat.clone()));
                }
            }
            // Entries of leases ended since outnumber the live ones: rebuild from the live.
            if due.len() > 2 * state.live.len() + 64 {
                let live = &state.live;
                due.retain(|Reverse((_, id))| live.contains_key(id));
            }
            beats
        };
        for (id, heartbeat) in beats {
            renewals.push(async move {
                let owned = heartbeat.renew().await;
                (id, heartbeat, owned)
            });
        }
        let deadline = due.peek().map(|Reverse((at, _))| *at);
        leases.deadline_ms.store(
            deadline.map_or(u64::MAX, |at| leases.ms(at)),
            Ordering::SeqCst,
        );
        // A registration between the drain above and the deadline's store saw the old one.
        if !leases.state.lock().new.is_empty() {
            continue;
        }
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = leases.wake.notified() => {}
            Some((id, heartbeat, owned)) = renewals.next(), if !renewals.is_empty() => {
                // A lease whose call ended meanwhile (its record completed) is neither
                // renewed again nor reported lost.
                let live = leases.state.lock().live.contains_key(&id);
                match (live, owned) {
                    (true, true) => due.push(Reverse((Instant::now() + heartbeat.period(), id))),
                    (true, false) => heartbeat.lost(),
                    (false, _) => {}
                }
            }
        }
    }
}

/// A lease kept alive by this thread's keeper for as long as this lives: for an attempt whose
/// work is not one future (a streamed result, polled by its consumer chunk by chunk).
#[derive(Debug)]
pub(crate) struct LeaseHold {
    _registration: Registration,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

/// Keeps `heartbeat`'s lease alive until the returned hold is dropped.
pub(crate) fn hold(heartbeat: Heartbeat) -> LeaseHold {
    // Tokio's timer panics here, before any chunk is produced, when the runtime has none.
    drop(tokio::time::sleep(Duration::ZERO));
    let (registration, _) = register(Arc::new(heartbeat));
    LeaseHold {
        _registration: registration,
    }
}

/// Polls `body` to completion while a keeper renews the lease (if `heartbeat`); with
/// `options.abort_on_lease_loss`, drops the body the moment the lease is lost.
pub(crate) async fn run_under_lease<F: Future>(
    heartbeat: Option<Heartbeat>,
    options: &Options,
    body: F,
) -> Ran<F::Output> {
    let mut body = pin!(body);
    let Some(heartbeat) = heartbeat else {
        return Ran::Finished(body.await);
    };
    let lost = heartbeat.signal.lost();
    // Tokio's timer panics here, before the body runs, when the runtime has none.
    drop(tokio::time::sleep(Duration::ZERO));
    let (_registration, scheduled_here) = register(Arc::new(heartbeat));
    if scheduled_here {
        // A task spawned or woken from a worker thread waits in that worker's LIFO slot, which
        // other workers never steal from: if the body then blocked this thread, the keeper
        // would never run. Yielding once lets it run and park on its timer, from which any
        // worker can wake it. A busy keeper already waits for an earlier beat: no wake, no yield.
        tokio::task::yield_now().await;
    }
    if !options.abort_on_lease_loss {
        return Ran::Finished(body.await);
    }
    tokio::select! {
        biased;
        out = &mut body => Ran::Finished(out),
        () = lost => Ran::Aborted,
    }
}
