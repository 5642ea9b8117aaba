//! The demo's crash (`--crash-after N`): the worker process exits in the middle of a step, after
//! the model billed and before the step's result is recorded, once N steps have finished.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where and when this process dies.
#[derive(Debug)]
pub(crate) struct CrashPoint {
    after: Option<u64>,
    steps_done: AtomicU64,
    worker: String,
}

impl CrashPoint {
    /// Dies once `after` steps have finished (never with `None`).
    pub(crate) fn new(after: Option<u64>, worker: &str) -> Self {
        Self {
            after,
            steps_done: AtomicU64::new(0),
            worker: worker.to_owned(),
        }
    }

    /// Counts a finished step.
    pub(crate) fn step_done(&self) {
        self.steps_done.fetch_add(1, Ordering::SeqCst);
    }

    /// Exits the process here if enough steps have finished.
    pub(crate) fn maybe_crash(&self) {
        if let Some(n) = self.after {
            if self.steps_done.load(Ordering::SeqCst) >= n {
                eprintln!(
                    "\n[{}] CRASH: exiting mid-step after {n} finished steps (the model already billed)",
                    self.worker
                );
                std::process::exit(137);
            }
        }
    }
}
