//! The lease of a running attempt: the heartbeat that renews it, and the signal a body sees when
//! the attempt lost it (taken over or released by an operator).
//!
//! The heartbeat runs on a task of its own, spawned before the body is first polled, so on a
//! multi-thread runtime a body that blocks its thread (a synchronous client, from its very first
//! line) cannot starve it. On a current-thread runtime the heartbeat shares the one thread with
//! the body: a body that blocks that thread for longer than its lease can still be taken over.
//! Its timer is made before the body starts, so a runtime without timers (or none at all) fails
//! the call there, in Tokio's panic, never with the body running unprotected.
//!
//! Because it runs on its own task, the heartbeat keeps a lease alive as long as the call's
//! future exists, polled or not: a future set aside and never polled again holds its key until
//! it is dropped (dropping it releases the key at once).
//!
//! The heartbeat task is aborted the moment the body ends or the call is dropped, so a dropped
//! call never keeps a lease alive.

use std::borrow::Cow;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

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

/// Everything the heartbeat needs, owned, so it can run on its own task.
#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) op: Cow<'static, str>,
    pub(crate) key: Key,
    pub(crate) attempt: u64,
    pub(crate) lease: Duration,
    pub(crate) signal: LeaseSignal,
}

impl Heartbeat {
    /// The timer of the beats: every third of the lease.
    fn beats(&self) -> tokio::time::Interval {
        let period = (self.lease / 3).max(Duration::from_millis(5));
        let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beats
    }

    /// Renews the lease at each of `beats` until the attempt loses it (then fires the signal and
    /// returns). Store errors are retried at the next beat.
    async fn beat(self, mut beats: tokio::time::Interval) {
        let attempt = AttemptRef {
            op: &self.op,
            key: &self.key,
            attempt: self.attempt,
        };
        loop {
            beats.tick().await;
            match self.store.renew(&attempt, self.lease).await {
                Ok(Fence::Owned) => {}
                Ok(Fence::Lost) => {
                    tracing::warn!(
                        attempt = self.attempt,
                        "idem: lease lost to a later attempt (or released); this attempt's completion will be fenced"
                    );
                    self.signal.fire();
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "idem: heartbeat failed; retrying at the next beat");
                }
            }
        }
    }
}

/// Aborts a spawned task when dropped (the body ended, or the call was dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `body` to completion while `heartbeat` (if any) renews the lease; with `options.
/// abort_on_lease_loss`, drops the body the moment the lease is lost.
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
    let abort = options.abort_on_lease_loss;
    let beats = heartbeat.beats();
    let _task = AbortOnDrop(tokio::spawn(heartbeat.beat(beats)));
    // A task spawned from a worker thread waits in that worker's LIFO slot, which other workers
    // never steal from: if the body then blocked this thread, the heartbeat would never start.
    // Yielding once lets it start (and park on its timer, from which any worker can wake it).
    tokio::task::yield_now().await;
    tokio::select! {
        biased;
        out = &mut body => Ran::Finished(out),
        () = lost, if abort => Ran::Aborted,
    }
}
