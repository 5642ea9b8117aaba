//! The outbox table: events a relay delivers after the transaction that wrote them commits.
//! Like a busy shared table, it sometimes refuses a write: the demo's transient fault, decided
//! per attempt by the queue (see `busy_while`), so the steps carry no fault flags.

use std::future::Future;

use sqlx::SqliteExecutor;

tokio::task_local! {
    /// Whether the outbox refuses writes during the current attempt.
    static BUSY: bool;
}

/// Runs `attempt` with the outbox refusing writes if `busy`.
pub(crate) async fn busy_while<F: Future>(busy: bool, attempt: F) -> F::Output {
    BUSY.scope(busy, attempt).await
}

/// Queues `payload` for the relay; returns the event's id.
pub(crate) async fn push<'e>(
    db: impl SqliteExecutor<'e>,
    input_id: &str,
    draft_id: i64,
    payload: &serde_json::Value,
) -> Result<i64, String> {
    if BUSY.try_with(|busy| *busy).unwrap_or(false) {
        return Err("outbox busy (transient), the task will be retried".to_owned());
    }
    let result = sqlx::query("INSERT INTO outbox (input_id, draft_id, payload) VALUES (?, ?, ?)")
        .bind(input_id)
        .bind(draft_id)
        .bind(payload.to_string())
        .execute(db)
        .await
        .map_err(|e| e.to_string())?;
    Ok(result.last_insert_rowid())
}
