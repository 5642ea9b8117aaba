//! Whether the call a consumer just ran had its outcome recorded: a message is acked only then.
//!
//! `Idem::call` returns a value the body paid for even when the store could not keep it (the
//! store unreachable after retries, a result over the snapshot limit). A consumer must not ack
//! such a message: the engine notes it here, on the consumer's task, and the consumer reads it.

use std::cell::Cell;
use std::future::Future;

/// Why an outcome went unrecorded, as far as a consumer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unrecorded {
    /// The result itself cannot be kept (too large, not encodable, not decoding back): running
    /// the handler again gives the same, so it counts as a failed attempt.
    Result,
    /// The store could not be reached to record it: try the message again later.
    Store,
}

tokio::task_local! {
    static UNRECORDED: Cell<Option<Unrecorded>>;
}

/// Runs `fut` with a fresh flag; returns its output and whether (why) an outcome went
/// unrecorded.
pub(crate) async fn watch<F: Future>(fut: F) -> (F::Output, Option<Unrecorded>) {
    UNRECORDED
        .scope(Cell::new(None), async move {
            let out = fut.await;
            (out, UNRECORDED.with(Cell::get))
        })
        .await
}

/// Called by the engine when a result is returned without being recorded.
pub(crate) fn note_unrecorded(why: Unrecorded) {
    // Outside a consumer there is no flag to set, and nothing to do.
    let _ = UNRECORDED.try_with(|flag| flag.set(Some(why)));
}
