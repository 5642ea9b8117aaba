//! Whether the call a consumer just ran had its outcome recorded: a message is acked only then.
//!
//! `Idem::call` returns a value the body paid for even when the store could not keep it (the
//! store unreachable after retries, a result over the snapshot limit). A consumer must not ack
//! such a message: the engine notes it here, on the consumer's task, and the consumer reads it.

use std::cell::Cell;
use std::future::Future;

tokio::task_local! {
    static UNRECORDED: Cell<bool>;
}

/// Runs `fut` with a fresh flag; returns its output and whether an outcome went unrecorded.
pub(crate) async fn watch<F: Future>(fut: F) -> (F::Output, bool) {
    UNRECORDED
        .scope(Cell::new(false), async move {
            let out = fut.await;
            (out, UNRECORDED.with(Cell::get))
        })
        .await
}

/// Called by the engine when a result is returned without being recorded.
pub(crate) fn note_unrecorded() {
    // Outside a consumer there is no flag to set, and nothing to do.
    let _ = UNRECORDED.try_with(|flag| flag.set(true));
}
