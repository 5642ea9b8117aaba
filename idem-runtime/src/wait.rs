//! How long a caller waits for another attempt of its key: the bound (`wait`, `on_conflict`)
//! and the pause between two looks. Shared by calls and transactional steps.

use std::time::{Duration, Instant};

use crate::call::{KeyedCall, OnConflict};
use crate::error::Error;

/// The longest pause between two looks at a key another attempt runs, when the store cannot
/// tell waiters that it changed (SQLite across processes). Within one process every store wakes
/// waiters at once (`waiters.rs`).
pub(crate) const POLL_CAP: Duration = Duration::from_millis(50);

/// The longest pause between two looks when the store pushes changes to waiters (PostgreSQL's
/// LISTEN/NOTIFY): looking again is only the fallback for a lost notification.
pub(crate) const NOTIFIED_POLL_CAP: Duration = Duration::from_millis(250);

/// The waiting state of one call: when it started and its next pause (doubling from 2 ms).
#[derive(Debug)]
pub(crate) struct Patience {
    started: Instant,
    poll: Duration,
    cap: Duration,
    /// `on_conflict = error` gives up at the first look (a fenced attempt converging on the new
    /// owner's outcome waits regardless: it already ran).
    honour_on_conflict: bool,
}

impl Patience {
    /// A caller's patience with another attempt of its key.
    pub(crate) fn new(cap: Duration) -> Self {
        Self {
            started: Instant::now(),
            poll: Duration::from_millis(2),
            cap,
            honour_on_conflict: true,
        }
    }

    /// A fenced attempt's patience with the attempt that took its key over: bounded by `wait`
    /// only.
    pub(crate) fn converging(cap: Duration) -> Self {
        Self {
            honour_on_conflict: false,
            ..Self::new(cap)
        }
    }

    /// After a look that found `attempt` running with `lease_left`: how long to pause before
    /// looking again, or [`Error::InProgress`] when the call may not wait (any more).
    pub(crate) fn pause(
        &mut self,
        call: &KeyedCall,
        attempt: u64,
        lease_left: Duration,
    ) -> Result<Duration, Error> {
        let elapsed = self.started.elapsed();
        let refuse = self.honour_on_conflict && call.options.on_conflict == OnConflict::Error;
        if refuse || elapsed >= call.options.wait {
            return Err(Error::InProgress {
                op: call.op.to_string(),
                key: call.key,
                attempt,
                waited: elapsed,
            });
        }
        let pause = self
            .poll
            .min(call.options.wait - elapsed)
            .min(lease_left + Duration::from_millis(1));
        self.poll = (self.poll * 2).min(self.cap);
        Ok(pause)
    }
}
