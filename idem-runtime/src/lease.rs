//! The heartbeat: renews an attempt's lease while its body runs, on the same task as the body.
//!
//! Running the heartbeat beside the body (not as a spawned task) means it stops the instant the
//! body ends or the caller drops the call, so a dropped call never keeps a lease alive.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use crate::call::Options;
use crate::store::{AttemptRef, Fence, Store};

/// Polls `body` to completion, renewing the lease every third of its length.
pub(crate) async fn run_with_heartbeat<F: Future>(
    store: &dyn Store,
    attempt: &AttemptRef<'_>,
    options: &Options,
    body: F,
) -> F::Output {
    let mut body = pin!(body);
    if !options.heartbeat {
        return body.await;
    }
    let period = (options.lease / 3).max(Duration::from_millis(5));
    let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lost = false;
    loop {
        tokio::select! {
            biased;
            out = &mut body => return out,
            _ = beats.tick(), if !lost => {
                let mut renew = pin!(store.renew(attempt, options.lease));
                tokio::select! {
                    biased;
                    out = &mut body => return out,
                    renewed = &mut renew => match renewed {
                        Ok(Fence::Owned) => {}
                        Ok(Fence::Lost) => {
                            lost = true;
                            tracing::warn!(
                                attempt = attempt.attempt,
                                "idem: lease lost to a later attempt; this attempt's completion will be fenced"
                            );
                        }
                        Err(error) => tracing::warn!(%error, "idem: heartbeat failed; retrying at the next beat"),
                    },
                }
            }
        }
    }
}
