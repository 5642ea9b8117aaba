//! Where the supervisor kills this agent process: the loop numbers its steps in the order it
//! makes them (model turns and tool calls alike, replayed or run), and the step numbered
//! `--stop-at`, once its effect has happened and before its result is recorded, announces
//! itself on stdout and waits for the SIGKILL. A kill there is the worst moment: the model
//! billed, the row is written in an open transaction, the notification went out.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the supervisor reads on stdout, followed by the step's number.
pub(crate) const MARK: &str = "agent-crash-point";

/// The kill point of this process.
#[derive(Debug)]
pub(crate) struct CrashPoint {
    stop_at: Option<u64>,
    step: AtomicU64,
}

impl CrashPoint {
    /// Stops at step `stop_at` (never with `None`).
    pub(crate) fn new(stop_at: Option<u64>) -> Self {
        Self {
            stop_at,
            step: AtomicU64::new(0),
        }
    }

    /// The loop is about to make step `n`.
    pub(crate) fn enter(&self, n: u64) {
        self.step.store(n, Ordering::SeqCst);
    }

    /// Called by a step's body after its effect: at the kill point, waits here to be killed.
    pub(crate) async fn reached(&self) {
        let step = self.step.load(Ordering::SeqCst);
        if self.stop_at == Some(step) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{MARK} {step}");
            let _ = out.flush();
            drop(out);
            std::future::pending::<()>().await;
        }
    }
}
